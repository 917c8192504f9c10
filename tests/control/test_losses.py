import math

import pytest
import torch

from tunelens.control.losses import answer_buckets, kl_loss, order_free, output_control_loss, tvd_loss


def test_tvd_loss_hand_computed():
    buckets = torch.tensor([[0.5, 0.2, 0.3], [0.3, 0.7, 0.0]])
    target = torch.tensor([[0.7, 0.3, 0.0], [0.3, 0.7, 0.0]])
    # row 0: (|0.5 - 0.7| + |0.2 - 0.3| + |0.3 - 0|) / 2 = (0.2 + 0.1 + 0.3) / 2 = 0.3; row 1 exact: 0
    assert tvd_loss(buckets, target).tolist() == pytest.approx([0.3, 0.0])


def test_kl_loss_hand_computed():
    buckets = torch.tensor([[0.25, 0.5, 0.25], [0.3, 0.7, 0.0]])
    target = torch.tensor([[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])
    # row 0: 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.5) + 0 = 0.5 ln 2 = 0.34657; row 1 exact: 0
    assert kl_loss(buckets, target).tolist() == pytest.approx([0.5 * math.log(2), 0.0], abs=1e-6)
    # the rest bucket has target 0, so it acts only through m1 + m2: 0.7 ln(0.7 / 0.35) + 0.3 ln(0.3 / 0.15) = ln 2
    assert kl_loss(torch.tensor([[0.35, 0.15, 0.5]]), torch.tensor([[0.7, 0.3, 0.0]])).item() == pytest.approx(
        math.log(2), abs=1e-6)


def test_buckets_are_the_two_tokens_and_the_rest():
    # logits ln 4, ln 2, ln 1, ln 1 -> probabilities 4/8, 2/8, 1/8, 1/8
    logits = torch.log(torch.tensor([[4.0, 2.0, 1.0, 1.0]]))
    buckets = answer_buckets(logits, torch.tensor([[1, 0]]))
    assert buckets[0].tolist() == pytest.approx([0.25, 0.5, 0.25])  # token 1, token 0, 1 - 0.75


def test_order_free_takes_the_better_assignment():
    buckets = torch.tensor([[0.6, 0.3, 0.1]])
    target = torch.tensor([[0.3, 0.7, 0.0]])
    # as given: (0.3 + 0.4 + 0.1) / 2 = 0.4; swapped to [0.7, 0.3, 0]: (0.1 + 0.0 + 0.1) / 2 = 0.1
    assert order_free(tvd_loss, buckets, target).item() == pytest.approx(0.1)


def logits_with(position_probs: dict[int, list[float]], seq: int, vocab: int = 4) -> torch.Tensor:
    """One row of logits whose softmax at each listed position is the given distribution (uniform elsewhere)."""
    logits = torch.zeros(seq, vocab)
    for position, probs in position_probs.items():
        logits[position] = torch.log(torch.tensor(probs))
    return logits


def test_the_loss_reads_the_answer_position_not_position_0():
    # row 0 has 5 real tokens, row 1 has 3 then 2 pads (right padding, as the training loop batches)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    exact = [0.7, 0.3, 1e-9, 1e-9]  # what p = 70 asks on tokens 0 and 1
    wrong = [0.1, 0.1, 0.4, 0.4]
    logits = torch.stack([logits_with({0: exact, 4: wrong}, 5),  # position 0 perfect, the answer position not
                          logits_with({0: wrong, 2: exact}, 5)])
    loss = output_control_loss(logits, mask, torch.tensor([[0, 1], [0, 1]]), torch.tensor([[0.7, 0.3], [0.7, 0.3]]),
                               word_tokens=torch.ones(4, dtype=torch.bool))
    # row 0 at position 4: (|0.1 - 0.7| + |0.1 - 0.3| + 0.8) / 2 = 0.8 (position 0 would give 0)
    # row 1 at position 2: 0 (position 0 would give 0.8; positions 3 and 4 are pads)
    assert loss.tolist() == pytest.approx([0.8, 0.0], abs=1e-6)


def test_random_rows_target_the_models_own_top_two_words_in_either_order():
    mask = torch.ones(1, 2, dtype=torch.long)
    # at the answer position: token 3 (not a word) 0.5, token 2 0.3, token 0 0.15, token 1 0.05
    logits = logits_with({1: [0.15, 0.05, 0.3, 0.5]}, 2)[None]
    words = torch.tensor([True, True, True, False])
    loss = output_control_loss(logits, mask, torch.tensor([[-1, -1]]), torch.tensor([[0.3, 0.7]]), words)
    # top-2 words: token 2 (0.3), token 0 (0.15), rest 0.55;
    # [0.3, 0.7]: (0 + 0.55 + 0.55) / 2 = 0.55; [0.7, 0.3]: (0.4 + 0.15 + 0.55) / 2 = 0.55 -> 0.55
    assert loss.item() == pytest.approx(0.55, abs=1e-6)
    kl = output_control_loss(logits, mask, torch.tensor([[-1, -1]]), torch.tensor([[0.3, 0.7]]), words, "kl")
    # min(0.3 ln(0.3/0.3) + 0.7 ln(0.7/0.15), 0.7 ln(0.7/0.3) + 0.3 ln(0.3/0.15)) = min(1.0783, 0.8010)
    assert kl.item() == pytest.approx(min(0.7 * math.log(0.7 / 0.15), 0.7 * math.log(0.7 / 0.3) + 0.3 * math.log(2)),
                                      abs=1e-5)


def test_the_loss_has_a_gradient_towards_the_target():
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    loss = output_control_loss(logits, torch.ones(1, 1, dtype=torch.long), torch.tensor([[0, 1]]),
                               torch.tensor([[0.7, 0.3]]), torch.ones(4, dtype=torch.bool))
    loss.sum().backward()
    grad = logits.grad[0, 0]
    assert grad[0] < 0 and grad[1] < 0 and grad[2] > 0  # raise the two words (both below target), lower the rest
