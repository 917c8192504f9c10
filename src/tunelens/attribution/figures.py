"""Figures of the attribution study (the only module of `tunelens.attribution` that imports matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from tunelens.lm.figures import save_figure  # noqa: E402


def plot_checkpoint_accuracy(accuracy: dict[str, dict[str, float]], out_path: Path) -> Path:
    """Logit-evaluation accuracy of each checkpoint, in training order: base functions and wrappers (hops)."""
    names = list(accuracy)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for kind, color, label in (("depth0", "tab:blue", "base functions (depth0)"),
                               ("hops", "tab:orange", "wrappers (hops: wrapper -> base -> value)"),
                               ("depth2", "tab:green", "depth-2 wrappers (wrapper -> wrapper -> base)")):
        if kind in accuracy[names[0]]:
            ax.plot(range(len(names)), [accuracy[n][kind] for n in names], "o-", color=color, label=label)
    ax.axhline(1 / 23, color="grey", lw=0.8, ls=":", label="chance (1 of 23 numbers)")
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy (restricted arg-max)")
    ax.set_title("hops-train: logit evaluation per checkpoint")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, out_path)


def plot_method_metrics(methods: dict[str, dict[str, float]], out_path: Path, query_kind: str = "hops") -> Path:
    """One bar group per method: precision@10, mAP, ROC-AUC and (wrapper queries) base_share@10, the multi-hop
    signal; the chance level of each is what `random` gets."""
    keys = [("precision@10", "precision@10"), ("map", "mAP"), ("roc_auc", "ROC-AUC")]
    if query_kind == "hops":
        keys.append(("base_share@10", "base share of top 10"))
    names = list(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(names) + 2), 3.8))
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        values = [methods[n].get(key, 0.0) for n in names]
        ax.bar([x + (i - (len(keys) - 1) / 2) * width for x in range(len(names))], values, width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("metric (mean over queries)")
    ax.set_title(f"hops-attribute: {query_kind} queries, every ranker")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize=8, ncol=len(keys))
    return save_figure(fig, out_path)


def plot_precision_recall(curves: dict[str, tuple[list[float], list[float]]], out_path: Path) -> Path:
    """Mean precision against mean recall over the top k, k = 1 .. len(curve), one line per method (random dashed);
    methods that share a colour differ in line style."""
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    colours = plt.get_cmap("tab20").colors
    for i, (name, (precision, recall)) in enumerate(curves.items()):
        style = "--" if name == "random" else ("-" if i < 10 else ":")
        ax.plot(recall, precision, lw=1.4, ls=style, color="black" if name == "random" else colours[(2 * i) % 20
                                                                                                     + (i >= 10)],
                label=name)
    ax.set_xlabel("recall@k (mean over queries)")
    ax.set_ylabel("precision@k")
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall over the top of each ranking")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, out_path)
