"""Figures of the routing study (the only module of `tunelens.routing` that imports matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

METRICS = (("caps_rate", "caps rate (sampled)"), ("caps_loss", "caps loss (nats/token)"),
           ("held_out_loss", "held-out loss (nats/token)"))


def plot_modes(modes: dict[str, dict[str, Any]], out_path: Path, title: str = "metrics per mode") -> Path:
    """One panel per metric, one bar per mode; the caps rate with its bootstrap 95 % interval."""
    return plot_comparison({"": modes}, out_path, title)


def plot_comparison(runs: dict[str, dict[str, dict[str, Any]]], out_path: Path, title: str = "runs x modes"
                    ) -> Path:
    """Grouped bars: runs along the x axis, one bar per mode, one panel per metric."""
    mode_names = list(dict.fromkeys(m for modes in runs.values() for m in modes))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS) + max(0, len(runs) - 2), 3.6))
    width = 0.8 / max(len(mode_names), 1)
    for ax, (metric, label) in zip(axes, METRICS):
        for j, mode in enumerate(mode_names):
            xs, values, errors = [], [], [[], []]
            for i, modes in enumerate(runs.values()):
                if mode not in modes:
                    continue
                value = modes[mode][metric]
                xs.append(i + (j - (len(mode_names) - 1) / 2) * width)
                values.append(value)
                low, high = modes[mode].get(f"{metric}_ci", (value, value))
                errors[0].append(max(value - low, 0))
                errors[1].append(max(high - value, 0))
            ax.bar(xs, values, width, yerr=errors if metric == "caps_rate" else None, capsize=3, label=mode)
        ax.set_xticks(range(len(runs)), list(runs), rotation=20 if len(runs) > 2 else 0)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
