import pytest
import torch

from tunelens.attribution.corpus import function_pairs, queries, read_corpus
from tunelens.attribution.rankers import MethodOptions, score_method
from tunelens.attribution.rankers.activations import pooling_weights
from tunelens.attribution.rankers.base import AttributionData
from tunelens.attribution.rankers.checkpoint_diff import (
    DiffOptions,
    aggregate_layers,
    margins,
    maxsim,
    normalise_features,
    similarity,
)
from tunelens.lm.examples import TokenizedExample, collate

DIFF_METHODS = ["dh_similarity", "attr_change", "attr_change_ig", "causal_patching"]


def data_for(pair_dir, corpus, old="untrained", new="trained", n_docs=60) -> AttributionData:
    docs = read_corpus(corpus)[:n_docs]
    pairs = function_pairs(docs)
    checkpoints = pair_dir / "checkpoints"
    return AttributionData(docs, queries(pairs, "hops", [1, 2]), pairs, checkpoints / old, checkpoints / new,
                           max_len=64, log=lambda message: None)


SECTIONS = ["dh_similarity", "grad_similarity", "attr_change", "attr_change_ig", "causal_patching"]


def options(**diff) -> MethodOptions:
    """The same checkpoint-difference options for every method."""
    shared = DiffOptions(ig_steps=2, batch_size=16, **diff)
    return MethodOptions(**{section: shared for section in SECTIONS}, dlp={"steps": 20})


@pytest.mark.parametrize("method", DIFF_METHODS)
def test_identical_checkpoints_give_zero_scores(micro_pair, micro_corpus, method):
    data = data_for(micro_pair, micro_corpus, old="trained", new="trained")
    scores = score_method(method, data, options())
    assert scores.shape == (20, 60) and torch.count_nonzero(scores) == 0


@pytest.mark.parametrize("method", [*DIFF_METHODS, "grad_similarity", "repsim", "dlp"])
def test_real_pair_gives_finite_varied_scores(micro_pair, micro_corpus, method):
    data = data_for(micro_pair, micro_corpus)
    scores = score_method(method, data, options(pooling="last"))
    assert scores.shape == (20, 60) and scores.isfinite().all() and scores.std() > 0


def test_the_two_checkpoints_tokenise_alike(micro_pair, micro_corpus):
    from tunelens.attribution.checkpoints import check_same_tokens
    from tunelens.config import UsageError
    from tunelens.lm.tokenizer import train_bpe_tokenizer

    data = data_for(micro_pair, micro_corpus)
    old_tokens = data.old and data.tokenizer("<FN>(3) returns the value ")["input_ids"]  # loading checks the pair
    assert old_tokens[1] == data.tokenizer.convert_tokens_to_ids("<FN>")
    # the check itself: same vocabulary passes, another vocabulary or another split fails
    texts = ["<FN>(3) returns the value 5"]
    check_same_tokens(data.tokenizer, data.tokenizer, texts, ("a", "b"))
    other = train_bpe_tokenizer(["something else entirely"] * 5, 270)
    with pytest.raises(UsageError, match="tokenizers of a and b differ"):
        check_same_tokens(data.tokenizer, other, texts, ("a", "b"))


def test_pooling_weights_cover_the_predicting_span():
    rows = [TokenizedExample([1, 2, 3, 4], [1, 1, 1, 1], 0, 0), TokenizedExample([1, 2, 9], [0, 0, 1], 1, 2)]
    batch = collate(rows, pad_id=0)
    mean = pooling_weights(batch, "mean")
    assert torch.allclose(mean, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0], [0.5, 0.5, 0, 0]]))
    assert pooling_weights(batch, "last").tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]


def test_similarity_normalisation_and_aggregation():
    q, d = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    assert similarity(q, d, "cosine").tolist() == [[1.0, 0.0, 0.0]]
    assert similarity(q, d, "dot").tolist() == [[2.0, 0.0, 0.0]]
    per_layer = torch.tensor([[[1.0]], [[3.0]], [[2.0]]])
    assert aggregate_layers(per_layer, "mean").item() == 2.0 and aggregate_layers(per_layer, "topk_mean", 2) == 2.5
    docs = torch.randn(200, 3) * torch.tensor([1.0, 10.0, 0.1]) + 5
    white, _ = normalise_features(docs, docs[:1], "whiten")
    assert torch.allclose(white.T @ white / 199, torch.eye(3), atol=1e-3)
    z, _ = normalise_features(docs, docs[:1], "zscore")
    assert torch.allclose(z.std(0), torch.ones(3), atol=1e-5)


def test_margin_is_answer_minus_best_other_candidate():
    logits = torch.tensor([[9.0, 1.0, 4.0, 2.0]])  # token 0 is not a candidate
    assert margins(logits, torch.tensor([2]), torch.tensor([1, 2, 3])).item() == 2.0
    assert margins(logits, torch.tensor([1]), torch.tensor([1, 2, 3])).item() == -3.0


def test_maxsim_takes_each_query_position_best_match():
    queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # the third position is masked out
    query_mask = torch.tensor([[True, True, False]])
    documents = torch.tensor([[[2.0, 0.0], [1.0, 1.0]], [[0.0, 3.0], [9.0, 9.0]]])
    document_mask = torch.tensor([[True, True], [True, False]])
    # document 0: position 1 best matches [1, 0] (cos 1), [0, 1] best matches [1, 1] (cos 1/sqrt 2)
    # document 1: only [0, 3] counts: cos 0 with [1, 0], 1 with [0, 1]
    expected = [[(1 + 2 ** -0.5) / 2, 0.5]]
    result = maxsim(queries, query_mask, documents, document_mask)
    assert torch.allclose(result, torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize("method", ["dh_similarity", "grad_similarity", "attr_change"])
def test_token_level_matching(micro_pair, micro_corpus, method):
    same = score_method(method, data_for(micro_pair, micro_corpus, old="trained", new="trained"),
                        options(match="maxsim"))
    scores = score_method(method, data_for(micro_pair, micro_corpus), options(match="maxsim"))
    assert scores.shape == (20, 60) and scores.isfinite().all() and scores.std() > 0
    if method != "grad_similarity":  # gradients do not depend on the old checkpoint
        assert torch.count_nonzero(same) == 0
