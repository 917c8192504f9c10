"""Checkpoint-difference rankers: what changed between the untrained and the trained checkpoint, document by
document and query by query (the methods the original project planned; no published numbers exist for them).

For each row (document or query) and decoder block l, with pooled residual streams h_old, h_new and the pooled
gradient g of the row's own loss at the new checkpoint (`activations.pooled_states`):

    dh_similarity    features Δh = h_new − h_old
    grad_similarity  features g
    attr_change      features Δh ⊙ g                      (how much of the row's loss the change explains, per unit)
    attr_change_ig   features Δh ⊙ ḡ, ḡ the mean gradient at K points h_old + α Δh on the straight path (midpoint
                     rule; the stream of block l is replaced, the rest of the new model runs on it)
    causal_patching  for a document, its top p % units of |Δh ⊙ g| at a block; on every query the old model runs
                     with those units of that block's stream taken from the new model; the score is the move of
                     the answer's logit margin towards the new model's margin, as a share of the full move

The first four compare a query's features with a document's at each block (cosine or dot product, after optional
z-scoring or whitening fitted on the documents) and combine the blocks (mean, or mean of the top k blocks). With
`match: maxsim` the first three compare token by token instead: for each query position the best match among the
document's positions, averaged over the query's positions (features are never pooled, nor normalised).
A pair of identical checkpoints gives Δh = 0: every score of dh_similarity, attr_change(_ig) and causal_patching
is then 0.
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt
from torch import Tensor

from tunelens.attribution.rankers.activations import Pooling, path_gradients, pooled_states
from tunelens.attribution.rankers.base import AttributionData
from tunelens.lm.batching import pad_batch
from tunelens.lm.layers import decoder_layers, residual_stream


class DiffOptions(BaseModel):
    """Options shared by the checkpoint-difference rankers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pooling: Pooling = Field("last", description="Positions pooled: the last predicting position, or the mean over "
                             "the predicting span.")
    layers: list[int] | None = Field(None, description="Decoder blocks compared (negative counts from the end); "
                                     "null = all.")
    match: Literal["pooled", "maxsim"] = Field("pooled", description="dh_similarity, grad_similarity, attr_change: "
                                               "compare pooled vectors, or token by token (each query position's "
                                               "best match among the document's positions, averaged).")
    aggregate: Literal["mean", "topk_mean"] = Field("mean", description="Combine the per-block similarities.")
    top_k: PositiveInt = Field(2, description="Blocks averaged by topk_mean.")
    normalise: Literal["none", "zscore", "whiten"] = Field("none", description="Feature normalisation, fitted on "
                                                           "the documents.")
    similarity: Literal["cosine", "dot"] = Field("cosine", description="Per-block similarity.")
    ig_steps: PositiveInt = Field(4, description="attr_change_ig: points on the path (midpoint rule).")
    patch_fraction: PositiveFloat = Field(0.05, le=1, description="causal_patching: share of a block's units "
                                          "patched.")
    patch_layers: list[int] | None = Field(None, description="causal_patching: blocks patched (scores summed); "
                                           "null = the middle block.")
    batch_size: PositiveInt = Field(64, description="Rows per forward pass.")


# ------------------------------------------------------------------------------------------------ features


def _states(data: AttributionData, side: str, kind: str, pooling: Pooling, batch_size: int
            ) -> tuple[Tensor, Tensor | None]:
    """Pooled states (and, at the new checkpoint, gradients) of the documents or queries, computed once."""
    def build():
        model = data.new if side == "new" else data.old
        rows = data.document_rows() if kind == "documents" else data.query_rows()
        data.log(f"pooled {pooling} activations{' and gradients' if side == 'new' else ''} of {len(rows)} {kind} at "
                 f"the {side} checkpoint")
        return pooled_states(model, rows, data.pad_id, pooling, with_grad=side == "new", batch_size=batch_size,
                             device=data.device)

    return data.memo(f"states/{side}/{kind}/{pooling}", build)


def delta(data: AttributionData, kind: str, options: DiffOptions) -> Tensor:
    new, _ = _states(data, "new", kind, options.pooling, options.batch_size)
    old, _ = _states(data, "old", kind, options.pooling, options.batch_size)
    return new - old


def gradient(data: AttributionData, kind: str, options: DiffOptions) -> Tensor:
    _, grads = _states(data, "new", kind, options.pooling, options.batch_size)
    assert grads is not None
    return grads


def path_gradient(data: AttributionData, kind: str, options: DiffOptions, layers: list[int]) -> Tensor:
    """Mean pooled gradient at each chosen block over the straight path from the old stream to the new one."""
    def build() -> Tensor:
        rows = data.document_rows() if kind == "documents" else data.query_rows()
        data.log(f"path gradients of {len(rows)} {kind} ({options.ig_steps} points x {len(layers)} blocks)")
        return path_gradients(data.new, data.old, rows, data.pad_id, layers, options.ig_steps, options.pooling,
                              options.batch_size, data.device)

    return data.memo(f"path_gradient/{kind}/{options.pooling}/{layers}/{options.ig_steps}", build)


def chosen_layers(n_layers: int, layers: list[int] | None) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    bad = [i for i in layers if not -n_layers <= i < n_layers]
    if bad:
        from tunelens.config import UsageError

        raise UsageError(f"layer {bad[0]} is out of range for a model with {n_layers} decoder blocks")
    return sorted({i % n_layers for i in layers})


# ---------------------------------------------------------------------------------------------- similarity


def normalise_features(documents: Float[Tensor, "doc d"], queries: Float[Tensor, "query d"], how: str,
                       eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """z-score (per unit) or whitening (ZCA with the documents' covariance), both fitted on the documents."""
    if how == "none":
        return documents, queries
    mean = documents.mean(0, keepdim=True)
    if how == "zscore":
        std = documents.std(0, keepdim=True).clamp(min=eps)
        return (documents - mean) / std, (queries - mean) / std
    if how == "whiten":
        centred = (documents - mean).double()
        covariance = centred.T @ centred / max(len(documents) - 1, 1)
        values, vectors = torch.linalg.eigh(covariance)
        transform = vectors @ torch.diag(values.clamp(min=0).add(eps).rsqrt()) @ vectors.T
        return (centred @ transform).float(), ((queries - mean).double() @ transform).float()
    raise ValueError(f"normalise must be none, zscore or whiten, got {how!r}")


def similarity(queries: Float[Tensor, "query d"], documents: Float[Tensor, "doc d"], kind: str
               ) -> Float[Tensor, "query doc"]:
    """Cosine (0 where either vector is zero) or dot product."""
    if kind == "cosine":
        queries = queries / queries.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        documents = documents / documents.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    elif kind != "dot":
        raise ValueError(f"similarity must be cosine or dot, got {kind!r}")
    return queries @ documents.T


def aggregate_layers(per_layer: Float[Tensor, "layer query doc"], how: str, top_k: int = 2
                     ) -> Float[Tensor, "query doc"]:
    if how == "mean":
        return per_layer.mean(0)
    if how == "topk_mean":
        return per_layer.topk(min(top_k, len(per_layer)), dim=0).values.mean(0)
    raise ValueError(f"aggregate must be mean or topk_mean, got {how!r}")


def compare(query_features: Float[Tensor, "query layer d"], document_features: Float[Tensor, "doc layer d"],
            layers: list[int], options: DiffOptions) -> Float[Tensor, "query doc"]:
    """Per-block similarity of query and document features on the chosen blocks, combined."""
    assert query_features.shape[1:] == document_features.shape[1:], \
        f"query features {tuple(query_features.shape)} vs document features {tuple(document_features.shape)}"
    per_layer = []
    for layer in layers:
        docs, qs = normalise_features(document_features[:, layer], query_features[:, layer], options.normalise)
        per_layer.append(similarity(qs, docs, options.similarity))
    return aggregate_layers(torch.stack(per_layer), options.aggregate, options.top_k)


def _layers(data: AttributionData, options: DiffOptions) -> list[int]:
    return chosen_layers(len(decoder_layers(data.new)), options.layers)


# --------------------------------------------------------------------------------------------- token level


def _token_features(data: AttributionData, kind: str, feature: str, options: DiffOptions):
    """Per batch: (row indices, position mask [B, T], features per block [B, T, d]) of `feature` (dh, grad or
    attr = dh ⊙ grad), the two checkpoints run in lockstep over the same batches. A query's positions are those its
    pooling names (the last predicting one, or the whole span); a document's, its whole predicting span."""
    from tunelens.attribution.rankers.activations import pooling_weights, stream_batches

    rows = data.document_rows() if kind == "documents" else data.query_rows()
    need_old, need_grad = feature in ("dh", "attr"), feature in ("grad", "attr")
    new_batches = stream_batches(data.new, rows, data.pad_id, need_grad, options.batch_size, data.device)
    old_batches = stream_batches(data.old, rows, data.pad_id, False, options.batch_size, data.device) if need_old \
        else iter(lambda: None, 0)
    positions = options.pooling if kind == "queries" else "mean"  # a document offers every predicting position
    for (chosen, batch, new, grads), old in zip(new_batches, old_batches):
        mask = pooling_weights(batch, positions) > 0
        if feature == "grad":
            features = grads
        else:
            features = [n - o for n, o in zip(new, old[2])]
            if feature == "attr":
                features = [f * g for f, g in zip(features, grads)]
        yield chosen, mask, features


def maxsim(queries: Float[Tensor, "query qpos d"], query_mask: Tensor, documents: Float[Tensor, "doc dpos d"],
           document_mask: Tensor, kind: str = "cosine") -> Float[Tensor, "query doc"]:
    """Mean over each query's positions of the best similarity among each document's positions (masked)."""
    if kind == "cosine":
        queries = queries / queries.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        documents = documents / documents.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    sim = torch.einsum("qih,bjh->qibj", queries.float(), documents.float())
    sim = sim.masked_fill(~document_mask[None, None], -torch.inf).amax(-1)  # [query, qpos, doc]
    sim = torch.where(sim.isfinite(), sim, torch.zeros_like(sim))  # a document with no position
    weights = query_mask.float() / query_mask.float().sum(-1, keepdim=True).clamp(min=1)
    return torch.einsum("qib,qi->qb", sim, weights)


def maxsim_scores(data: AttributionData, feature: str, options: DiffOptions) -> Tensor:
    layers = _layers(data, options)
    query_parts = list(_token_features(data, "queries", feature, options))
    width = max(mask.shape[1] for _, mask, _ in query_parts)
    n_dim = query_parts[0][2][0].shape[-1]
    q_features = torch.zeros(len(layers), len(data.queries), width, n_dim, device=data.device)
    q_mask = torch.zeros(len(data.queries), width, dtype=torch.bool, device=data.device)
    for chosen, mask, features in query_parts:
        q_mask[chosen, :mask.shape[1]] = mask
        for i, layer in enumerate(layers):
            q_features[i, chosen, :mask.shape[1]] = features[layer]
    scores = torch.zeros(len(layers), len(data.queries), len(data.documents))
    for chosen, mask, features in _token_features(data, "documents", feature, options):
        for i, layer in enumerate(layers):
            scores[i][:, chosen] = maxsim(q_features[i], q_mask, features[layer], mask, options.similarity).cpu()
    return aggregate_layers(scores, options.aggregate, options.top_k)


# ------------------------------------------------------------------------------------------------- rankers


def dh_similarity_scores(data: AttributionData, options: DiffOptions | None = None) -> Tensor:
    options = options or DiffOptions()
    if options.match == "maxsim":
        return maxsim_scores(data, "dh", options)
    return compare(delta(data, "queries", options), delta(data, "documents", options), _layers(data, options),
                   options)


def grad_similarity_scores(data: AttributionData, options: DiffOptions | None = None) -> Tensor:
    options = options or DiffOptions()
    if options.match == "maxsim":
        return maxsim_scores(data, "grad", options)
    return compare(gradient(data, "queries", options), gradient(data, "documents", options), _layers(data, options),
                   options)


def attr_change_scores(data: AttributionData, options: DiffOptions | None = None) -> Tensor:
    options = options or DiffOptions()
    if options.match == "maxsim":
        return maxsim_scores(data, "attr", options)
    features = {kind: delta(data, kind, options) * gradient(data, kind, options) for kind in ("queries", "documents")}
    return compare(features["queries"], features["documents"], _layers(data, options), options)


def attr_change_ig_scores(data: AttributionData, options: DiffOptions | None = None) -> Tensor:
    options = options or DiffOptions()
    layers = _layers(data, options)
    features = {}
    for kind in ("queries", "documents"):
        features[kind] = delta(data, kind, options) * path_gradient(data, kind, options, layers)
    return compare(features["queries"], features["documents"], layers, options)


def margins(logits: Float[Tensor, "row vocab"], answers: Tensor, candidates: Tensor) -> Float[Tensor, "row"]:
    """Logit of the answer minus the largest logit of the other candidate numbers."""
    restricted = logits[:, candidates].float()
    is_answer = candidates[None, :] == answers[:, None]
    others = restricted.masked_fill(is_answer, -torch.inf).amax(-1)
    return logits.gather(1, answers[:, None])[:, 0].float() - others


def causal_patching_scores(data: AttributionData, options: DiffOptions | None = None) -> Tensor:
    options = options or DiffOptions()
    n_layers = len(decoder_layers(data.new))
    layers = chosen_layers(n_layers, options.patch_layers if options.patch_layers is not None else [n_layers // 2])
    rows = data.query_rows()
    # the prompts (rows without their answer), left-padded: every one ends in the last column
    input_ids, attention = (t.to(data.device) for t in pad_batch([r.input_ids[:-1] for r in rows], data.pad_id,
                                                                  side="left"))
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    answers, candidates = data.answer_ids().to(data.device), data.candidate_ids().to(data.device)
    importance = (delta(data, "documents", options) * gradient(data, "documents", options)).abs()
    n_units = max(1, round(options.patch_fraction * importance.shape[-1]))
    scores = torch.zeros(len(rows), len(data.documents))

    def query_margins(model, rewrite=None, repeat: int = 1) -> Tensor:
        with torch.no_grad(), residual_stream(model, [], rewrite=rewrite):
            logits = model(input_ids=input_ids.repeat(repeat, 1), attention_mask=attention.repeat(repeat, 1),
                           position_ids=positions.repeat(repeat, 1), logits_to_keep=1).logits[:, -1]
        return margins(logits, answers.repeat(repeat), candidates)

    old_margin, new_margin = query_margins(data.old), query_margins(data.new)
    full_move = new_margin - old_margin
    direction, size = full_move.sign(), full_move.abs().clamp(min=1e-6)
    docs_per_pass = max(1, options.batch_size * 32 // max(len(rows), 1))
    for layer in layers:
        with torch.no_grad(), residual_stream(data.new, [layer]) as recorded:
            data.new(input_ids=input_ids, attention_mask=attention, position_ids=positions)
        new_stream = recorded[layer]
        units = importance[:, layer].topk(n_units, dim=-1).indices  # [doc, n_units]
        for start in range(0, len(data.documents), docs_per_pass):
            chunk = units[start:start + docs_per_pass]
            mask = torch.zeros(len(chunk), new_stream.shape[-1], dtype=torch.bool, device=data.device)
            mask[torch.arange(len(chunk))[:, None], chunk] = True
            row_mask = mask.repeat_interleave(len(rows), 0)[:, None, :]  # [doc * query, 1, d]
            patched = new_stream.repeat(len(chunk), 1, 1)

            def rewrite_at(stream, row_mask=row_mask, patched=patched):
                return torch.where(row_mask, patched, stream)

            moved = query_margins(data.old, {layer: rewrite_at}, len(chunk)).view(len(chunk), len(rows))
            scores[:, start:start + len(chunk)] += (direction * (moved - old_margin) / size).T.cpu()
    return scores


__all__ = ["DiffOptions", "aggregate_layers", "maxsim", "attr_change_ig_scores", "attr_change_scores",
           "causal_patching_scores", "compare", "dh_similarity_scores", "grad_similarity_scores", "margins",
           "normalise_features", "similarity"]
