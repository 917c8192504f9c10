"""Figures of language-model training runs (the only module of `tunelens.lm` that imports matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curve(metrics_path: Path, out_path: Path, before: float | None = None,
                        title: str = "training") -> Path:
    """Training loss per logged step, held-out loss at each evaluation, and the held-out loss before training."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(r["step"] + 1, r["train/loss"]) for r in records if "train/loss" in r]
    held_out = [(r["step"] + 1, r["eval/held_out_loss"]) for r in records if "eval/held_out_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if train:
        ax.plot(*zip(*train), color="tab:blue", lw=1.2, label="training batch loss")
    if before is not None:
        held_out = [(0, before), *held_out]
    if held_out:
        ax.plot(*zip(*held_out), "o-", color="tab:orange", lw=1.5, label="held-out loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("mean loss per example (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return save_figure(fig, out_path)


def save_figure(fig, out_path: Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay the figure out (inside `rect`), write it as a 120-dpi PNG (folders made), close it; every study's
    figures are saved through here."""
    fig.tight_layout(rect=rect)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
