"""Token streams cut into training windows, and padding token-id lists into batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from tunelens.config import UsageError


def token_windows(texts: Sequence[str], tokenizer, seq_len: int) -> Int[Tensor, "window seq"]:
    """Each text encoded as the tokenizer does by default (with its BOS for Llama/OLMo-2-style tokenizers), then
    EOS; the texts joined into one stream and cut into non-overlapping windows of seq_len tokens (the remainder
    is dropped)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(list(texts))["input_ids"]:
        stream += ids if eos is None else [*ids, eos]
    n_windows = len(stream) // seq_len
    if n_windows == 0:
        raise UsageError(f"{len(texts)} texts make {len(stream)} tokens, so no window of seq_len={seq_len}: use "
                         "more texts or a shorter seq_len")
    return torch.tensor(stream[: n_windows * seq_len]).view(n_windows, seq_len)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"]
              ) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
    """(input_ids, attention_mask). Generation wants left padding (the last position is real for every row);
    training and scoring usually want right padding. The caller says which."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(length - len(seq), length) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask
