import math

import pytest
import torch

from tunelens.attribution.metrics import (
    average_precision,
    ndcg_at,
    precision_at,
    precision_recall_curve,
    recall_at,
    reciprocal_rank,
    relevant_in_order,
    retrieval_metrics,
    roc_auc,
    share_at,
)

# one query, five documents; documents 1 and 2 tie, and the tie keeps document order (1 before 2)
SCORES = torch.tensor([[0.9, 0.8, 0.8, 0.1, 0.5]])
RELEVANT = torch.tensor([[False, True, False, True, False]])


def test_ranking_breaks_ties_by_document_order():
    assert relevant_in_order(SCORES, RELEVANT).tolist() == [[0, 1, 0, 0, 1]]
    swapped = torch.tensor([[False, False, True, True, False]])  # the later of the tied pair is relevant
    assert relevant_in_order(SCORES, swapped).tolist() == [[0, 0, 1, 0, 1]]


def test_hand_computed_values():
    hits = relevant_in_order(SCORES, RELEVANT)
    assert precision_at(hits, 1).item() == 0 and precision_at(hits, 2).item() == 0.5
    assert precision_at(hits, 5).item() == pytest.approx(0.4)
    assert recall_at(hits, 2).item() == 0.5 and recall_at(hits, 5).item() == 1
    assert reciprocal_rank(hits).item() == 0.5
    assert average_precision(hits).item() == pytest.approx((1 / 2 + 2 / 5) / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    assert ndcg_at(hits, 10).item() == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    # relevant {0.8, 0.1} against irrelevant {0.9, 0.8, 0.5}: 0.8 beats 0.5 and ties 0.8 -> 1.5 of 6 pairs
    assert roc_auc(SCORES, RELEVANT).item() == pytest.approx(1.5 / 6)


def test_precision_at_k_beyond_the_documents_counts_only_what_exists():
    hits = relevant_in_order(SCORES, RELEVANT)
    assert precision_at(hits, 50).item() == pytest.approx(0.4)


def test_recall_is_capped_by_the_number_of_relevant_documents():
    n_docs, n_relevant = 3000, 300
    scores = -torch.arange(n_docs, dtype=torch.float32)[None]  # a perfect ranking
    relevant = torch.zeros(1, n_docs, dtype=torch.bool)
    relevant[0, :n_relevant] = True
    metrics = retrieval_metrics(scores, relevant)
    assert metrics["recall@10"] == pytest.approx(10 / 300)
    assert metrics["precision@10"] == 1 and metrics["map"] == pytest.approx(1) and metrics["roc_auc"] == 1
    assert metrics["ndcg@10"] == pytest.approx(1) and metrics["mrr"] == 1


def test_no_relevant_document_gives_zeros_and_chance_auc():
    relevant = torch.zeros(1, 5, dtype=torch.bool)
    metrics = retrieval_metrics(SCORES, relevant)
    assert metrics["map"] == 0 and metrics["mrr"] == 0 and metrics["ndcg@10"] == 0 and metrics["roc_auc"] == 0.5


def test_shares_and_averaging_over_queries():
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    own = torch.tensor([[True, False, False], [True, False, False]])
    base = torch.tensor([[False, True, False], [False, True, False]])
    assert share_at(scores, own, 1).tolist() == [1.0, 0.0]
    metrics = retrieval_metrics(scores, own | base, own=own, base=base, ks=(1, 2))
    assert metrics["own_share@1"] == 0.5 and metrics["base_share@2"] == 0.5
    assert metrics["precision@1"] == 0.5  # query 1 ranks its irrelevant document first
    assert set(metrics) >= {"precision@1", "recall@2", "mrr", "map", "ndcg@10", "roc_auc"}


def test_precision_recall_curve_ends_at_full_recall():
    precision, recall = precision_recall_curve(SCORES, RELEVANT)
    assert precision == pytest.approx([0, 0.5, 1 / 3, 0.25, 0.4]) and recall[-1] == 1
