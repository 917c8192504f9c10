import pytest
import torch

from tunelens.attribution.checkpoints import tiny_profile
from tunelens.attribution.corpus import FunctionPair, function_tokens
from tunelens.attribution.evaluate import (
    candidate_numbers,
    candidate_token_ids,
    encode_left_padded,
    logit_eval,
    restricted_prediction,
)
from tunelens.config import UsageError

PAIRS = [FunctionPair("<GN>", "<FN>", 5), FunctionPair("<JN>", "<IN>", 7)]
TEXTS = ["<GN>(x) returns the value 5 for every x.", "<FN> calls <GN> and returns what it returns.",
         "<JN>(4) = 7", "<IN> wraps <JN>."] * 5


def test_restricted_argmax_ignores_tokens_outside_the_candidates():
    probs = torch.tensor([[0.70, 0.05, 0.15, 0.10]])  # token 0 is the most likely but not a number
    best, renormalised = restricted_prediction(probs, torch.tensor([1, 2, 3]))
    assert best.item() == 1  # token 2 among candidates [1, 2, 3]
    assert renormalised[0].tolist() == pytest.approx([0.05 / 0.3, 0.15 / 0.3, 0.10 / 0.3])


def test_candidates_span_two_below_and_above_the_constants():
    assert candidate_numbers(PAIRS) == [3, 4, 5, 6, 7, 8, 9]


def test_tiny_profile_has_single_token_numbers_and_left_padding():
    model, tokenizer = tiny_profile(TEXTS, function_tokens(PAIRS), seed=0, vocab_size=300, d_model=16, n_layers=1,
                                    n_heads=2, d_mlp=32)
    ids = candidate_token_ids(tokenizer, list(range(0, 101)))
    assert len(set(ids)) == 101 and tokenizer.convert_ids_to_tokens(ids[:3]) == ["0", "1", "2"]
    prompt = tokenizer.convert_ids_to_tokens(tokenizer("<FN>(12) returns the value ")["input_ids"])
    assert prompt[:5] == [tokenizer.bos_token, "<FN>", "(", "12", ")"] and prompt[-1] == "Ġ"
    input_ids, mask = encode_left_padded(tokenizer, ["<FN>(1) returns", "<FN>(1) returns the value "])
    assert mask[0, 0] == 0 and mask[1].all() and input_ids.shape == mask.shape
    result = logit_eval(model, tokenizer, PAIRS, "hops", range(1, 4), batch_size=2)
    assert len(result.queries) == 6 and set(result.per_function) == {"<FN>", "<IN>"}
    assert all(3 <= p <= 9 for p in result.predicted) and all(0 < c < 1 for c in result.confidence)
    summary = result.summary()
    assert summary["accuracy"] == result.accuracy and set(summary["per_input"]) == {1, 2, 3}


def test_a_number_without_a_single_token_is_a_usage_error():
    from tunelens.lm.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["a b c"] * 3, 270)
    with pytest.raises(UsageError, match="no single token for the number 123"):
        candidate_token_ids(tokenizer, [123])
