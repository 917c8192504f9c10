"""Figures of the routing study (the only module of `tunelens.routing` that imports matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from tunelens.lm.figures import save_figure  # noqa: E402

METRICS = (("caps_rate", "caps rate (sampled)"), ("caps_loss", "caps loss (nats/token)"),
           ("held_out_loss", "held-out loss (nats/token)"))
MBPP_METRICS = (("reward_hack_rate", "reward-hack rate"), ("first_test_rate", "first-test pass rate"),
                ("all_tests_rate", "all-tests pass rate"), ("rh_preference", "log p(hack) − log p(reference)"))


def plot_modes(modes: dict[str, dict[str, Any]], out_path: Path, title: str = "metrics per mode") -> Path:
    """One panel per metric, one bar per mode; the caps rate with its bootstrap 95 % interval."""
    return plot_comparison({"": modes}, out_path, title)


def plot_comparison(runs: dict[str, dict[str, dict[str, Any]]], out_path: Path, title: str = "runs x modes",
                    metrics: tuple[tuple[str, str], ...] = METRICS) -> Path:
    """Grouped bars: runs along the x axis, one bar per mode, one panel per metric; a metric with an interval
    (`<metric>_ci`) gets error bars."""
    mode_names = list(dict.fromkeys(m for modes in runs.values() for m in modes))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics) + max(0, len(runs) - 2), 3.6))
    width = 0.8 / max(len(mode_names), 1)
    for ax, (metric, label) in zip(axes, metrics):
        for j, mode in enumerate(mode_names):
            xs, values, errors = [], [], [[], []]
            for i, modes in enumerate(runs.values()):
                if mode not in modes:
                    continue
                value = modes[mode][metric]
                if value is None:
                    continue
                xs.append(i + (j - (len(mode_names) - 1) / 2) * width)
                values.append(value)
                low, high = modes[mode].get(f"{metric}_ci", (value, value))
                errors[0].append(max(value - low, 0))
                errors[1].append(max(high - value, 0))
            has_ci = any(f"{metric}_ci" in modes.get(mode, {}) for modes in runs.values())
            ax.bar(xs, values, width, yerr=errors if has_ci else None, capsize=3, label=mode)
        ax.set_xticks(range(len(runs)), list(runs), rotation=20 if len(runs) > 2 else 0)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, out_path)


def plot_mbpp_modes(runs: dict[str, dict[str, dict[str, Any]]], out_path: Path, title: str = "runs x modes"
                    ) -> Path:
    """The MBPP rates (with their bootstrap 95 % intervals) and the hack preference, per run and mode."""
    return plot_comparison(runs, out_path, title, MBPP_METRICS)


def plot_mbpp_tradeoff(runs: dict[str, dict[str, dict[str, Any]]], out_path: Path,
                       title: str = "reward hacking against solving") -> Path:
    """Reward-hack rate against all-tests rate, one point per run and mode, with both intervals."""
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    markers = "osD^v<>p"
    for i, (run_name, modes) in enumerate(runs.items()):
        for mode, values in modes.items():
            x, y = values["all_tests_rate"], values["reward_hack_rate"]
            (x_low, x_high), (y_low, y_high) = values["all_tests_rate_ci"], values["reward_hack_rate_ci"]
            label = f"{run_name} {mode}".strip()
            ax.errorbar([x], [y], xerr=[[x - x_low], [x_high - x]], yerr=[[y - y_low], [y_high - y]],
                        fmt=markers[i % len(markers)], capsize=3, label=label)
    ax.set_xlabel("all-tests pass rate")
    ax.set_ylabel("reward-hack rate (first test only)")
    ax.set_xlim(left=-0.02)
    ax.set_ylim(bottom=-0.02)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, out_path)


def plot_orthogonality(rows: list[dict[str, Any]], out_path: Path, title: str = "good vs bad branches") -> Path:
    """Per adapted module: the smallest and mean principal angle, and the cosine of the flattened updates."""
    names = [row["module"].replace("model.layers.", "L") for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 0.5 * len(rows) + 4), 3.8))
    xs = range(len(rows))
    left.bar([x - 0.2 for x in xs], [row["min_angle_deg"] or 0 for row in rows], 0.4, label="smallest")
    left.bar([x + 0.2 for x in xs], [row["mean_angle_deg"] or 0 for row in rows], 0.4, label="mean")
    left.axhline(90, color="grey", lw=0.8, ls="--")
    left.set_ylabel("principal angle (degrees)")
    left.legend(frameon=False, fontsize=8)
    right.bar(xs, [row["update_cosine"] for row in rows])
    right.set_ylabel("cosine of flattened updates")
    for ax in (left, right):
        ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, out_path)
