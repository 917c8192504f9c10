"""Figures of the attribution study (the only module of `tunelens.attribution` that imports matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, out_path: Path) -> Path:
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def plot_checkpoint_accuracy(accuracy: dict[str, dict[str, float]], out_path: Path) -> Path:
    """Logit-evaluation accuracy of each checkpoint, in training order: base functions and wrappers (hops)."""
    names = list(accuracy)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for kind, color, label in (("depth0", "tab:blue", "base functions (depth0)"),
                               ("hops", "tab:orange", "wrappers (hops: wrapper -> base -> value)")):
        ax.plot(range(len(names)), [accuracy[n][kind] for n in names], "o-", color=color, label=label)
    ax.axhline(1 / 23, color="grey", lw=0.8, ls=":", label="chance (1 of 23 numbers)")
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy (restricted arg-max)")
    ax.set_title("hops-train: logit evaluation per checkpoint")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, out_path)
