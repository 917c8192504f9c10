"""Baselines that read only tokens: random, BM25, TF-IDF cosine and edit distance.

All work on the tokenizer's ids (a query and a document match on the function token, the parentheses, "returns",
...), as the original's BM25 ranker did. None needs a model.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch import Tensor

from tunelens.attribution.rankers.base import AttributionData


def random_scores(data: AttributionData, options=None) -> Tensor:
    """Uniform scores from a generator seeded by the run's seed: the chance line of every metric."""
    generator = torch.Generator().manual_seed(data.seed)
    return torch.rand(len(data.queries), len(data.documents), generator=generator)


def bm25_matrix(documents: list[list[int]], queries: list[list[int]], k1: float = 1.5, b: float = 0.75) -> Tensor:
    """Okapi BM25 (`rank-bm25`) of each query against every document; tokens are ids, as strings."""
    from rank_bm25 import BM25Okapi

    index = BM25Okapi([[str(t) for t in doc] for doc in documents], k1=k1, b=b)
    return torch.tensor(np.stack([index.get_scores([str(t) for t in query]) for query in queries]))


def bm25_scores(data: AttributionData, options=None) -> Tensor:
    return bm25_matrix(data.document_tokens(), data.query_tokens())


def tfidf_matrix(documents: list[list[int]], queries: list[list[int]]) -> Tensor:
    """Cosine of TF-IDF bags of tokens: tf = count, idf = log((1 + n) / (1 + df)) + 1 (fitted on the documents),
    rows L2-normalised; a query token no document has is dropped."""
    vocabulary = {t: i for i, t in enumerate(sorted({t for doc in documents for t in doc}))}
    df = Counter(t for doc in documents for t in set(doc))
    idf = torch.tensor([np.log((1 + len(documents)) / (1 + df[t])) + 1 for t in vocabulary], dtype=torch.float64)

    def bags(rows: list[list[int]]) -> Tensor:
        out = torch.zeros(len(rows), len(vocabulary), dtype=torch.float64)
        for r, row in enumerate(rows):
            for token, count in Counter(row).items():
                if token in vocabulary:
                    out[r, vocabulary[token]] = count
        weighted = out * idf
        return weighted / weighted.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    return bags(queries) @ bags(documents).T


def tfidf_scores(data: AttributionData, options=None) -> Tensor:
    return tfidf_matrix(data.document_tokens(), data.query_tokens())


def edit_distances(query: list[int], documents: list[list[int]]) -> np.ndarray:
    """Levenshtein distance (insert, delete, substitute: cost 1 each) between one token sequence and each document,
    the dynamic programme run over all documents at once (numpy, one row of the table per query token)."""
    lengths = np.array([len(doc) for doc in documents])
    width = int(lengths.max(initial=0))
    padded = np.full((len(documents), width), -1, dtype=np.int64)
    for i, doc in enumerate(documents):
        padded[i, :len(doc)] = doc
    previous = np.tile(np.arange(width + 1), (len(documents), 1))  # distance of the empty query prefix
    for i, token in enumerate(query, 1):
        current = np.empty_like(previous)
        current[:, 0] = i
        substitute = previous[:, :-1] + (padded != token)
        delete = previous[:, 1:] + 1
        best = np.minimum(substitute, delete)
        for j in range(1, width + 1):  # insertion depends on the cell to the left
            current[:, j] = np.minimum(best[:, j - 1], current[:, j - 1] + 1)
        previous = current
    return previous[np.arange(len(documents)), lengths]


def edit_distance_matrix(documents: list[list[int]], queries: list[list[int]]) -> Tensor:
    """Similarity 1 - distance / max(len(query), len(document)), in [0, 1]."""
    lengths = np.array([len(doc) for doc in documents])
    rows = []
    for query in queries:
        distance = edit_distances(query, documents)
        rows.append(1 - distance / np.maximum(np.maximum(lengths, len(query)), 1))
    return torch.tensor(np.stack(rows))


def edit_distance_scores(data: AttributionData, options=None) -> Tensor:
    return edit_distance_matrix(data.document_tokens(), data.query_tokens())


__all__ = ["bm25_matrix", "bm25_scores", "edit_distance_matrix", "edit_distance_scores", "edit_distances",
           "random_scores", "tfidf_matrix", "tfidf_scores"]
