import math

import pytest
import torch

from tunelens.lm.batching import pad_batch
from tunelens.lm.scoring import (
    bootstrap_ci,
    last_real_positions,
    next_token_ce,
    next_token_probs,
    per_example_loss,
    sequence_logprob,
)
from tunelens.lm.tiny import tiny_causal_lm

LOG3 = math.log(3.0)


def test_next_token_ce_hand_computed():
    # vocab 2; position 0 predicts token 1 with logits (0, log 3) -> p = 3/4; position 1 predicts token 0 with
    # equal logits -> p = 1/2; the last position has no label. CE = (-log 3/4 - log 1/2) / 2
    logits = torch.tensor([[[0.0, LOG3], [0.0, 0.0], [5.0, -5.0]]])
    ids = torch.tensor([[0, 1, 0]])
    expected = -(math.log(0.75) + math.log(0.5)) / 2
    assert next_token_ce(logits, ids).item() == pytest.approx(expected)


def test_masked_losses_hand_computed_and_ignore_padding():
    # Row 0 predicts token 1 from position 0 with logits (0, log 3): p = 3/4; its second target is padding
    # (the confident wrong logits there must not count). Row 1 predicts 0 then 1 with uniform logits: p = 1/2 each.
    logits = torch.tensor([[[0.0, LOG3], [9.0, -9.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    ids = torch.tensor([[0, 1, 1], [1, 0, 1]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert per_example_loss(logits, ids, mask).tolist() == pytest.approx([-math.log(0.75), -math.log(0.5)])
    assert sequence_logprob(logits, ids, mask).tolist() == pytest.approx([math.log(0.75), 2 * math.log(0.5)])
    # token-weighted over the batch: three targets, -(log 3/4 + 2 log 1/2) / 3
    assert next_token_ce(logits, ids, mask).item() == pytest.approx(-(math.log(0.75) + 2 * math.log(0.5)) / 3)


def test_per_example_loss_matches_transformers_and_padding_does_not_change_it():
    torch.manual_seed(0)
    model = tiny_causal_lm(vocab_size=50, d_model=16, n_layers=1, n_heads=2).eval()
    rows = [[3, 9, 4, 7, 1], [5, 2]]
    ids, mask = pad_batch(rows, pad_id=0, side="right")
    batched = per_example_loss(model(input_ids=ids, attention_mask=mask).logits, ids, mask)
    for row, loss in zip(rows, batched):
        alone = torch.tensor([row])
        assert torch.allclose(loss, model(input_ids=alone, labels=alone).loss, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_next_token_probs_batched_equal_one_at_a_time(side):
    torch.manual_seed(0)
    model = tiny_causal_lm(vocab_size=50, d_model=16, n_layers=2, n_heads=2).eval()
    rows = [[3, 9, 4, 7, 1], [5, 2], [8, 8, 8]]
    ids, mask = pad_batch(rows, pad_id=0, side=side)
    assert last_real_positions(mask).tolist() == ([4, 1, 2] if side == "right" else [4, 4, 4])
    batched = next_token_probs(model, ids, mask)
    for row, probs in zip(rows, batched):
        alone = model(input_ids=torch.tensor([row])).logits[0, -1].softmax(-1)
        assert torch.allclose(probs, alone, atol=1e-5)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_data():
    few = [0.0, 1.0] * 10
    many = [0.0, 1.0] * 500
    low_few, high_few = bootstrap_ci(few, seed=1)
    low_many, high_many = bootstrap_ci(many, seed=1)
    assert low_few < 0.5 < high_few and low_many < 0.5 < high_many
    # the standard error of a mean of n fair coins is 0.5 / sqrt(n): about 0.11 for 20, 0.016 for 1000
    assert high_few - low_few == pytest.approx(2 * 1.96 * 0.5 / math.sqrt(20), rel=0.25)
    assert high_many - low_many == pytest.approx(2 * 1.96 * 0.5 / math.sqrt(1000), rel=0.25)
    assert bootstrap_ci(few, seed=1) == (low_few, high_few)  # seeded
    assert bootstrap_ci([0.3], seed=0) == pytest.approx((0.3, 0.3))
