import torch

from tunelens.spd.figures import context_top_tokens


class LetterTokenizer:
    """Token id i decodes to the i-th lowercase letter."""

    def decode(self, ids):
        return "".join(chr(ord("a") + int(i)) for i in ids)


def test_context_top_tokens_by_hand():
    """Two windows of five tokens, three subcomponents. Subcomponent 2 is active at three positions, 0 at one,
    1 at none (0.1 is not above the threshold); the rows come most widely active first, each position shown with
    up to two tokens before it."""
    tokens = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    importance = torch.zeros(2, 5, 3)
    importance[0, 3, 0] = 0.9  # "d" after "bc"
    importance[1, 0, 2] = 0.5  # "f" at the start of window 1: no context
    importance[1, 4, 2] = 1.0  # "j" after "hi"
    importance[0, 1, 2] = 0.3  # "b" after "a"
    importance[0, 2, 1] = 0.1
    rows = context_top_tokens(importance, tokens, LetterTokenizer(), threshold=0.1, n_top=3, context=2)
    assert [r["subcomponent"] for r in rows] == [2, 0]
    assert [r["n_tokens_active"] for r in rows] == [3, 1]
    assert rows[0]["top_tokens"] == ["hi[j]", "[f]", "a[b]"]
    assert rows[1]["top_tokens"][0] == "bc[d]"
