"""Figures of the output-control study (the only module here that imports matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tunelens.lm.figures import save_figure  # noqa: E402

MODES = ("sad", "aligned")
REFERENCE_STYLE = {"oracle": ("k", "-"), "fifty_fifty": ("0.5", "--")}


def _value(entry: dict[str, Any], mode: str) -> float:
    rate = entry[mode]["pass_rate"]
    return float("nan") if rate is None else rate


def pass_rates(path: Path, per_model: dict[str, dict[str, Any]], references: dict[str, Any]) -> None:
    """Pass rate per case, one bar per model, one panel per scoring mode; the references as horizontal ticks."""
    cases = list(next(iter(per_model.values())))
    fig, axes = plt.subplots(1, len(MODES), figsize=(5 + 1.5 * len(per_model), 3.6), sharey=True)
    width = 0.8 / len(per_model)
    for ax, mode in zip(axes, MODES):
        for m, (name, summary) in enumerate(per_model.items()):
            xs = [c + (m - (len(per_model) - 1) / 2) * width for c in range(len(cases))]
            ax.bar(xs, [_value(summary[case], mode) for case in cases], width, label=name)
        for ref, (color, style) in REFERENCE_STYLE.items():
            for c, case in enumerate(cases):
                ax.hlines(_value(references[ref]["cases"][case], mode), c - 0.45, c + 0.45, colors=color,
                          linestyles=style, label=ref if c == 0 else None)
        ax.set_xticks(range(len(cases)), [c.replace("_", "\n") for c in cases], fontsize=8)
        ax.set_title(f"{mode} scoring")
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("pass rate")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(4, len(labels)))
    save_figure(fig, path, rect=(0, 0.1, 1, 1))


def achieved_vs_requested(path: Path, per_model: dict[str, dict[str, Any]]) -> None:
    """Mean achieved share of one word (renormalised over the model's two) against the requested share: the first
    given word against p; in the random cases the likelier word against max(p, q)."""
    cases = list(next(iter(per_model.values())))
    fig, axes = plt.subplots(1, len(cases), figsize=(3.4 * len(cases), 3.4), squeeze=False)
    for ax, case in zip(axes[0], cases):
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, label="asked for")
        for name, summary in per_model.items():
            points = {int(k): v for k, v in summary[case]["achieved_share_by_requested"].items() if v is not None}
            if points:
                xs = sorted(points)
                ax.plot([x / 100 for x in xs], [points[x] for x in xs], "o-", label=name)
        ax.set_title(case.replace("_", " "), fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("requested share")
    axes[0][0].set_ylabel("achieved share")
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, path)


def before_after(path: Path, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Mean aligned TVD and aligned pass rate per case, before and after fine-tuning."""
    cases = list(before)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for ax, (label, getter) in zip(axes, [("mean aligned TVD", lambda e: e["mean_tvd"]),
                                          ("aligned pass rate", lambda e: e["aligned"]["pass_rate"])]):
        for offset, (name, summary) in zip((-0.2, 0.2), (("before", before), ("after", after))):
            values = [getter(summary[c]) for c in cases]
            ax.bar([c + offset for c in range(len(cases))], [float("nan") if v is None else v for v in values], 0.4,
                   label=name)
        ax.set_xticks(range(len(cases)), [c.replace("_", "\n") for c in cases], fontsize=8)
        ax.set_title(label)
        ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


def deviation(path: Path, by_window: dict[str, dict[str, float | None]]) -> None:
    """Pass rate of the deviation task per window, one bar group per item kind."""
    kinds = list(by_window)
    windows = sorted({w for entry in by_window.values() for w in entry}, key=int)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    width = 0.8 / max(1, len(kinds))
    for k, kind in enumerate(kinds):
        values = [by_window[kind].get(w) for w in windows]
        ax.bar([i + (k - (len(kinds) - 1) / 2) * width for i in range(len(windows))],
               [float("nan") if v is None else v for v in values], width, label=kind)
    ax.set_xticks(range(len(windows)), windows)
    ax.set_xlabel("window (words)")
    ax.set_ylabel("pass rate")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    save_figure(fig, path)
