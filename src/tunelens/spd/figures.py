"""Figures of an SPD run: importances on one-hot inputs, importance histograms, U/V vectors, TMS polygons."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from tunelens.runs import Run, write_json  # noqa: E402
from tunelens.spd import metrics  # noqa: E402
from tunelens.spd.component_model import ComponentModel  # noqa: E402
from tunelens.spd.components import EmbeddingComponents  # noqa: E402
from tunelens.spd.configs import SpdConfig  # noqa: E402
from tunelens.spd.targets import Target, ToyTarget  # noqa: E402
from tunelens.spd.targets.lm import LmTarget  # noqa: E402

MAX_SHOWN = 120  # columns beyond this make unreadable heatmaps


def plot_all(model: ComponentModel, target: Target, config: SpdConfig, run: Run,
             one_hot: dict[str, Tensor] | None) -> None:
    orders = column_orders(model, target, one_hot)
    if one_hot is not None:
        save(plot_one_hot_importances(one_hot, orders, config.eval.ci_alive_threshold),
             run.figure_path("importance_one_hot"))
    with torch.no_grad():
        inputs_x = target.sample_batch(config.eval.batch_size)
        _, layer_inputs = model.forward_target(inputs_x)
        importances = model.importances(layer_inputs)
    save(plot_histograms(importances.lower), run.figure_path("importance_histograms"))
    save(plot_uv(model, orders), run.figure_path("components_uv"))
    if (isinstance(target, ToyTarget) and target.ground_truth_axes.get("linear1") == "in"
            and model.component("linear1").target_weight().shape[0] == 2):
        save(plot_tms_polygon(model, one_hot), run.figure_path("tms_polygon"))
    if isinstance(target, LmTarget):
        for name in model.names:
            if isinstance(model.component(name), EmbeddingComponents):
                seen = torch.unique(target.sample_batch(256))  # tokens that never occur have untrained rows
                table = embedding_top_tokens(model, name, target.tokenizer, config.eval.ci_alive_threshold, seen)
            else:  # importance depends on the context: the positions of the sampled windows where it is highest
                table = context_top_tokens(importances.lower[name], inputs_x, target.tokenizer,
                                           config.eval.ci_alive_threshold)
            write_json(run.dir / f"top_tokens_{name}.json", table)
            save(plot_top_tokens(table, name), run.figure_path(f"top_tokens_{name}"))


def embedding_top_tokens(model: ComponentModel, name: str, tokenizer, threshold: float, token_ids: Tensor,
                         n_top: int = 8, max_rows: int = 40) -> list[dict]:
    """For each alive subcomponent of an embedding: on how many of `token_ids` it is active, and which of them
    have the highest importance (the importance of an embedding depends on the token alone)."""
    comps = model.component(name)
    with torch.no_grad():
        importance = importance_pair_for(model, name, comps.V[token_ids])
    return busiest_subcomponents(importance, threshold, lambda row: tokenizer.decode([int(token_ids[row])]), n_top,
                                 max_rows)


def context_top_tokens(importance: Tensor, token_ids: Tensor, tokenizer, threshold: float, n_top: int = 8,
                       max_rows: int = 40, context: int = 3) -> list[dict]:
    """For each alive subcomponent of a layer inside a language model (importance (window, position, C) on the
    windows `token_ids`): at how many positions it is active, and the positions where its importance is highest,
    each shown as its last `context` tokens with the current one in brackets ("... the big[ dog]")."""
    seq = token_ids.shape[-1]

    def show(position: int) -> str:
        window, t = divmod(position, seq)
        before = tokenizer.decode(token_ids[window, max(0, t - context):t].tolist())
        return f"{before}[{tokenizer.decode([int(token_ids[window, t])])}]"

    return busiest_subcomponents(importance.reshape(-1, importance.shape[-1]), threshold, show, n_top, max_rows)


def busiest_subcomponents(importance: Tensor, threshold: float, show, n_top: int, max_rows: int) -> list[dict]:
    """Alive subcomponents of importance (row, C), most widely active first: on how many rows each is active
    (`n_tokens_active`) and `show(row)` for its `n_top` rows of highest importance."""
    active = importance > threshold
    order = torch.argsort(active.sum(0), descending=True, stable=True)
    rows = []
    for c in order.tolist()[:max_rows]:
        n_active = int(active[:, c].sum())
        if n_active == 0:
            break
        top = torch.topk(importance[:, c], k=min(n_top, importance.shape[0])).indices.tolist()
        rows.append({"subcomponent": c, "n_tokens_active": n_active, "top_tokens": [show(r) for r in top]})
    return rows


def importance_pair_for(model: ComponentModel, name: str, inner: Tensor) -> Tensor:
    from tunelens.spd.component_model import module_key
    from tunelens.spd.sigmoids import importance_pair

    return importance_pair(model.ci_fns[module_key(name)](inner), model.sigmoid_type)[0]


def plot_top_tokens(rows: list[dict], name: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9, 0.28 * max(len(rows), 1) + 0.8))
    ax.axis("off")
    lines = [f"c{r['subcomponent']:>4}  on {r['n_tokens_active']:>5} tokens:  "
             + "  ".join(repr(t) for t in r["top_tokens"]) for r in rows] or ["no alive subcomponents"]
    ax.text(0, 1, "\n".join(lines), family="monospace", fontsize=8, va="top", transform=ax.transAxes)
    ax.set_title(f"{name}: alive subcomponents (most widely active first) and the tokens they matter most for"
                 " (in brackets, after their context, for a layer inside the model)",
                 fontsize=9, loc="left")
    return fig


def integer_ticks(ax: plt.Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def save(fig: plt.Figure, path) -> None:
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def column_orders(model: ComponentModel, target: Target, one_hot: dict[str, Tensor] | None) -> dict[str, np.ndarray]:
    """Subcomponent order per layer: identity-permuted where an identity pattern is expected, otherwise by mass."""
    orders = {}
    patterns = target.ci_patterns if isinstance(target, ToyTarget) else []
    kinds = {name: p.kind for p in patterns for name in p.layers}
    for name in model.names:
        if one_hot is None:
            comps = model.component(name)
            norms = metrics.subcomponent_norms(comps.V.detach(), comps.U.detach())
            orders[name] = np.argsort(-norms.cpu().numpy())
        elif kinds.get(name) == "identity" and one_hot[name].shape[0] <= one_hot[name].shape[1]:
            orders[name] = metrics.identity_permutation(one_hot[name])
        else:
            orders[name] = metrics.dense_permutation(one_hot[name])
    return orders


def plot_one_hot_importances(one_hot: dict[str, Tensor], orders: dict[str, np.ndarray], threshold: float) -> plt.Figure:
    names = list(one_hot)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 1, 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = one_hot[name].cpu().numpy()[:, orders[name]]
        alive = (values > threshold).any(0)
        n_shown = min(max(int(alive.sum()) + 3, values.shape[0]), values.shape[1], MAX_SHOWN)
        image = ax.imshow(values[:MAX_SHOWN, :n_shown], cmap="Blues", vmin=0, vmax=1, aspect="auto",
                          interpolation="nearest")
        ax.set_title(f"{name}\n{int(alive.sum())} alive", fontsize=9)
        ax.set_xlabel("subcomponent (permuted)")
        ax.set_ylabel("one-hot input feature")
        integer_ticks(ax)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="causal importance")
    fig.suptitle("Causal importance on one-hot inputs (0.75 · e_f)", fontsize=10, y=1.04)
    return fig


def plot_histograms(importances: dict[str, Tensor]) -> plt.Figure:
    names = list(importances)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 0.5, 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = importances[name].detach().reshape(-1).cpu().numpy()
        ax.hist(values, bins=50, range=(min(0.0, values.min()), max(1.0, values.max())), color="tab:blue")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("causal importance")
    axes[0][0].set_ylabel("count (all inputs × subcomponents)")
    fig.tight_layout()
    return fig


def plot_uv(model: ComponentModel, orders: dict[str, np.ndarray]) -> plt.Figure:
    names = model.names
    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names) + 0.5, 5.5), squeeze=False)
    for col, name in enumerate(names):
        comps = model.component(name)
        order = orders[name][:MAX_SHOWN]
        source = model.tied.get(name)
        labels = (["V (d_in × C)", "U (C × d_out)"] if source is None
                  else [f"V = {source} Uᵀ", f"U = {source} Vᵀ"])  # shared parameters, own importance order
        for row, (label, matrix) in enumerate(zip(labels, [comps.V, comps.U.T])):
            values = matrix.detach().cpu().numpy()[:MAX_SHOWN, order]
            limit = float(np.abs(values).max()) or 1.0
            axes[row][col].imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
            axes[row][col].set_title(f"{name}: {label}", fontsize=8)
            axes[row][col].set_xlabel("subcomponent (permuted)", fontsize=8)
            integer_ticks(axes[row][col])
    fig.tight_layout()
    return fig


def plot_tms_polygon(model: ComponentModel, one_hot: dict[str, Tensor] | None) -> plt.Figure:
    """Target columns W[:, f] in the 2-d hidden space, beside the linear1 subcomponent columns V[f, c]·U[c]."""
    comps = model.component("linear1")
    W = comps.target_weight().detach().cpu().numpy()  # (2, F)
    V, U = comps.V.detach().cpu().numpy(), comps.U.detach().cpu().numpy()
    n_features = W.shape[1]
    colors = plt.cm.tab10(np.arange(n_features) % 10)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4))
    for f in range(n_features):
        left.plot([0, W[0, f]], [0, W[1, f]], color=colors[f], lw=2)
        left.scatter(*W[:, f], color=colors[f], zorder=3)
        left.annotate(str(f), W[:, f] * 1.08, ha="center", va="center", fontsize=8)
    norms = np.linalg.norm(V, axis=0) * np.linalg.norm(U, axis=1)
    shown = np.argsort(-norms)[:n_features * 2]
    label_above = 0.05 * np.linalg.norm(W, axis=0).max()  # shrunken pieces would pile their labels at the origin
    for c in shown:
        f = int(np.argmax(np.abs(V[:, c])))
        piece = V[f, c] * U[c]
        right.plot([0, piece[0]], [0, piece[1]], color=colors[f], lw=2, alpha=0.9)
        if np.linalg.norm(piece) > label_above:
            right.annotate(f"c{c}", piece * 1.1, ha="center", va="center", fontsize=7)
    limit = 1.25 * max(np.abs(W).max(), 1e-6)
    for ax, title in [(left, "target: columns of W"), (right, "SPD: subcomponent columns V[f,c]·U[c]")]:
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.85", lw=0.8)
        ax.axvline(0, color="0.85", lw=0.8)
        ax.set_title(title, fontsize=9)
    fig.suptitle("TMS feature polygon (colour = feature)", fontsize=10)
    fig.tight_layout()
    return fig
