import torch

import pytest

from tunelens.config import UsageError
from tunelens.lm.batching import pad_batch, per_example_loss, token_windows
from tunelens.lm.tiny import tiny_causal_lm


class WordTokenizer:
    """Each word is its length; BOS is 0 and EOS 9, like a Llama-style tokenizer that prepends BOS."""

    eos_token_id = 9

    def __call__(self, texts):
        return {"input_ids": [[0, *(len(word) for word in text.split())] for text in texts]}


def test_token_windows_join_texts_with_eos_and_drop_the_remainder():
    windows = token_windows(["a bb", "ccc", "dddd ee f"], WordTokenizer(), seq_len=4)
    # stream: 0 1 2 9 | 0 3 9 0 | 4 2 1 9  -> three windows, nothing left over
    assert windows.tolist() == [[0, 1, 2, 9], [0, 3, 9, 0], [4, 2, 1, 9]]
    assert token_windows(["a bb", "ccc"], WordTokenizer(), seq_len=3).tolist() == [[0, 1, 2], [9, 0, 3]]
    with pytest.raises(UsageError, match="no window of seq_len=20"):
        token_windows(["a bb"], WordTokenizer(), seq_len=20)


def test_pad_batch_sides():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_per_example_loss_hand_computed_and_ignores_padding():
    # vocab 2. Row 0 predicts token 1 from position 0 with logits (0, log 3): p = 3/4; its second target is padding
    # (the confident wrong logits there must not count). Row 1 predicts 0 then 1 with uniform logits: p = 1/2 each.
    log3 = torch.log(torch.tensor(3.0))
    logits = torch.tensor([[[0.0, log3], [9.0, -9.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    ids = torch.tensor([[0, 1, 1], [1, 0, 1]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss = per_example_loss(logits, ids, mask)
    assert torch.allclose(loss, torch.tensor([-torch.log(torch.tensor(0.75)), -torch.log(torch.tensor(0.5))]))


def test_per_example_loss_matches_transformers_and_padding_does_not_change_it():
    torch.manual_seed(0)
    model = tiny_causal_lm(vocab_size=50, d_model=16, n_layers=1, n_heads=2).eval()
    rows = [[3, 9, 4, 7, 1], [5, 2]]
    ids, mask = pad_batch(rows, pad_id=0, side="right")
    batched = per_example_loss(model(input_ids=ids, attention_mask=mask).logits, ids, mask)
    for row, loss in zip(rows, batched):
        alone = torch.tensor([row])
        assert torch.allclose(loss, model(input_ids=alone, labels=alone).loss, atol=1e-5)
