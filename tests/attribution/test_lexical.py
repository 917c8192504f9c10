import math

import pytest
import torch

from tunelens.attribution.rankers.lexical import bm25_matrix, edit_distance_matrix, edit_distances, tfidf_matrix

DOCS = [[1, 2, 3, 4], [5, 6, 7], [1, 2, 9, 9, 9], [8, 8]]
QUERY = [1, 2, 9, 9, 9]  # a copy of document 2


@pytest.mark.parametrize("matrix", [bm25_matrix, tfidf_matrix, edit_distance_matrix])
def test_a_copy_of_the_query_ranks_first(matrix):
    scores = matrix(DOCS, [QUERY, [5, 6]])
    assert scores.shape == (2, 4)
    assert scores[0].argmax().item() == 2 and scores[1].argmax().item() == 1


def test_tfidf_hand_computed():
    docs = [[1, 1, 2], [2, 3]]
    # idf = ln(3 / (1 + df)) + 1: token 1 -> ln 1.5 + 1, token 2 -> 1, token 3 -> ln 1.5 + 1
    i1 = math.log(1.5) + 1
    d0 = torch.tensor([2 * i1, 1.0, 0.0])
    d1 = torch.tensor([0.0, 1.0, i1])
    query = torch.tensor([i1, 0.0, 0.0])
    expected = [float(query @ d / (query.norm() * d.norm())) for d in (d0, d1)]
    assert tfidf_matrix(docs, [[1, 7]])[0].tolist() == pytest.approx(expected)  # token 7 is unknown: dropped


def test_edit_distance_hand_computed():
    assert edit_distances([1, 2, 3], [[1, 2, 3], [1, 3], [], [3, 2, 1], [1, 2, 3, 4, 5]]).tolist() == [0, 1, 3, 2, 2]
    assert edit_distances([], [[1, 2]]).tolist() == [2]
    assert edit_distance_matrix([[1, 3]], [[1, 2, 3]])[0, 0].item() == pytest.approx(1 - 1 / 3)


def test_bm25_prefers_rare_shared_tokens():
    scores = bm25_matrix([[1, 2], [1, 3], [1, 4], [1, 5]], [[1, 4]])[0]
    assert scores.argmax().item() == 2 and scores[0] == scores[1]
