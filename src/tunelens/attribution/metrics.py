"""Retrieval metrics of a query x document score matrix against a relevance matrix (pure functions).

Every metric is computed per query and averaged over queries. The ranking of a query sorts documents by score,
highest first; ties are broken by document order (the earlier document ranks first), so every metric but ROC-AUC
sees one definite ranking. ROC-AUC is the Mann-Whitney probability that a relevant document outscores an
irrelevant one, a tie counting one half.

    precision@k = |top k ∩ relevant| / k
    recall@k    = |top k ∩ relevant| / |relevant|        (at most k / |relevant|: 10/300 on 20hops wrapper queries)
    MRR         = 1 / rank of the first relevant document
    AP          = mean over relevant documents of precision@(their rank);  mAP = mean AP over queries
    nDCG@10     = Σ_{rank ≤ 10} rel / log2(rank + 1), divided by the same sum of the ideal ranking
    own_share@k / base_share@k = share of the top k that are the query function's own documents / its base's
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

KS = (1, 5, 10, 20, 50)


def rankings(scores: Float[Tensor, "query doc"]) -> Int[Tensor, "query doc"]:
    """Document indices of each query, best first; equal scores keep document order."""
    return torch.sort(scores.double(), dim=-1, descending=True, stable=True).indices


def relevant_in_order(scores: Float[Tensor, "query doc"], relevant: Bool[Tensor, "query doc"]
                      ) -> Float[Tensor, "query doc"]:
    """Relevance (0/1) of the documents in ranked order."""
    return relevant.gather(1, rankings(scores)).double()


def precision_at(hits: Float[Tensor, "query doc"], k: int) -> Float[Tensor, "query"]:
    k = min(k, hits.shape[1])
    return hits[:, :k].sum(-1) / k


def recall_at(hits: Float[Tensor, "query doc"], k: int) -> Float[Tensor, "query"]:
    return hits[:, :k].sum(-1) / hits.sum(-1).clamp(min=1)


def reciprocal_rank(hits: Float[Tensor, "query doc"]) -> Float[Tensor, "query"]:
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
    first = torch.where(hits > 0, ranks, torch.inf).amin(-1)
    return torch.where(first.isfinite(), 1 / first, torch.zeros_like(first))


def average_precision(hits: Float[Tensor, "query doc"]) -> Float[Tensor, "query"]:
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
    precision = hits.cumsum(-1) / ranks
    return (precision * hits).sum(-1) / hits.sum(-1).clamp(min=1)


def ndcg_at(hits: Float[Tensor, "query doc"], k: int = 10) -> Float[Tensor, "query"]:
    k = min(k, hits.shape[1])
    discounts = 1 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    dcg = (hits[:, :k] * discounts).sum(-1)
    ideal = torch.sort(hits, dim=-1, descending=True).values[:, :k]
    idcg = (ideal * discounts).sum(-1)
    return torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.zeros_like(dcg))


def roc_auc(scores: Float[Tensor, "query doc"], relevant: Bool[Tensor, "query doc"]) -> Float[Tensor, "query"]:
    """P(relevant scores above irrelevant) + ½ P(tie), per query, from average ranks (0.5 with one class empty)."""
    values = scores.double()
    out = torch.full((len(values),), 0.5, dtype=torch.float64)
    for q in range(len(values)):
        n_pos, n_neg = int(relevant[q].sum()), int((~relevant[q]).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = _average_ranks(values[q])
        out[q] = (ranks[relevant[q]].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def _average_ranks(values: Float[Tensor, "doc"]) -> Float[Tensor, "doc"]:
    """Ascending ranks from 1, tied values sharing their mean rank."""
    unique, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    return mean_rank[inverse]


def share_at(scores: Float[Tensor, "query doc"], members: Bool[Tensor, "query doc"], k: int) -> Float[Tensor, "query"]:
    """Share of each query's top k that belongs to `members` (e.g. the wrapper's base documents)."""
    k = min(k, scores.shape[1])
    return members.gather(1, rankings(scores)[:, :k]).double().mean(-1)


def retrieval_metrics(scores: Float[Tensor, "query doc"], relevant: Bool[Tensor, "query doc"],
                      own: Bool[Tensor, "query doc"] | None = None, base: Bool[Tensor, "query doc"] | None = None,
                      ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Every metric, averaged over queries; `own_share@k`/`base_share@k` when `own`/`base` are given."""
    assert scores.shape == relevant.shape, f"scores {tuple(scores.shape)} vs relevance {tuple(relevant.shape)}"
    hits = relevant_in_order(scores, relevant)
    out: dict[str, Any] = {}
    for k in ks:
        out[f"precision@{k}"] = precision_at(hits, k).mean().item()
    for k in ks:
        out[f"recall@{k}"] = recall_at(hits, k).mean().item()
    out["mrr"] = reciprocal_rank(hits).mean().item()
    out["map"] = average_precision(hits).mean().item()
    out["ndcg@10"] = ndcg_at(hits, 10).mean().item()
    out["roc_auc"] = roc_auc(scores, relevant).mean().item()
    for name, members in (("own_share", own), ("base_share", base)):
        if members is not None:
            for k in ks:
                out[f"{name}@{k}"] = share_at(scores, members, k).mean().item()
    return out


def precision_recall_curve(scores: Float[Tensor, "query doc"], relevant: Bool[Tensor, "query doc"],
                           max_k: int | None = None) -> tuple[list[float], list[float]]:
    """Mean precision@k and recall@k over queries for k = 1 .. max_k (all documents by default)."""
    hits = relevant_in_order(scores, relevant)
    max_k = max_k or hits.shape[1]
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
    cumulative = hits.cumsum(-1)
    precision = (cumulative / ranks).mean(0)[:max_k]
    recall = (cumulative / hits.sum(-1, keepdim=True).clamp(min=1)).mean(0)[:max_k]
    return precision.tolist(), recall.tolist()


__all__ = ["KS", "average_precision", "ndcg_at", "precision_at", "precision_recall_curve", "rankings",
           "recall_at", "reciprocal_rank", "relevant_in_order", "retrieval_metrics", "roc_auc", "share_at"]
