
import pytest

from tunelens.config import UsageError
from tunelens.lm.batching import pad_batch, token_windows


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
