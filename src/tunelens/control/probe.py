"""Reading a model's next-token distribution at the answer position, many prompts per forward pass.

Per batch: one forward pass over left-padded prompts (a prefix several prompts share computed once, then their
remaining tokens on its cached keys and values: `tunelens.lm.prefix`), logits at the final position only, the
softmax over the full vocabulary, then the probabilities of tokens that differ only by surrounding whitespace
(" cat", "cat", "cat\\n") summed into one entry per word
(`merged[b, key] = Σ_{token: strip(text(token)) = key} probs[b, token]`, one `index_add_`). From the merged
distribution: the top-k entries, the two most likely entries made of letters only (what the random cases can
answer), and the exact merged probability of each requested word.

A word can only be scored when it has a single-token spelling where the answer goes (`answer_tokens`): a word
split into pieces has no one next-token probability, so its samples are skipped and counted, never scored by a
first piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tunelens.lm.prefix import next_token_probs_batches

UNUSED = "<unused id>"  # ids the model has but the tokenizer does not (padded embedding matrices)


@dataclass(frozen=True)
class VocabIndex:
    keys: list[str]  # distinct whitespace-stripped token texts
    key_of_token: Int[Tensor, "vocab"]
    key_ids: dict[str, int]
    is_word_key: Bool[Tensor, "key"]  # letters only

    @property
    def n_keys(self) -> int:
        return len(self.keys)


def vocab_index(tokenizer, n_vocab: int) -> VocabIndex:
    """Every token id of the model mapped to its stripped text (decoded once, not per prompt)."""
    n_known = min(n_vocab, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(n_known)]) + [UNUSED] * (n_vocab - n_known)
    key_ids: dict[str, int] = {}
    key_of_token = torch.tensor([key_ids.setdefault(text.strip(), len(key_ids)) for text in texts])
    keys = list(key_ids)
    is_word = torch.tensor([key.isalpha() for key in keys])
    return VocabIndex(keys, key_of_token, key_ids, is_word)


def answer_tokens(tokenizer, words: Sequence[str], prefill: str) -> dict[str, int | None]:
    """Each word's token id as the answer right after `prefill` (a space, then the word), or None when that
    spelling takes more than one token."""
    base = tokenizer(prefill, add_special_tokens=False)["input_ids"]
    encoded = tokenizer([f"{prefill} {word}" for word in words], add_special_tokens=False)["input_ids"]
    tokens: dict[str, int | None] = {}
    for word, ids in zip(words, encoded):
        tail = ids[len(base):]
        tokens[word] = tail[0] if ids[: len(base)] == base and len(tail) == 1 else None
    return tokens


@dataclass
class Readout:
    """Per prompt, from the whitespace-merged next-token distribution (keys index `VocabIndex.keys`)."""

    top_keys: Int[Tensor, "prompt k"]
    top_probs: Float[Tensor, "prompt k"]
    word_keys: Int[Tensor, "prompt 2"]  # the two most likely letter-only entries
    word_probs: Float[Tensor, "prompt 2"]
    target_probs: Float[Tensor, "prompt 2"]  # merged probability of the requested keys (0 where none was asked)


def merge_variants(probs: Float[Tensor, "batch vocab"], index: VocabIndex) -> Float[Tensor, "batch key"]:
    merged = torch.zeros(probs.shape[0], index.n_keys, dtype=probs.dtype, device=probs.device)
    return merged.index_add_(1, index.key_of_token.to(probs.device), probs)


def read_merged(merged: Float[Tensor, "batch key"], index: VocabIndex, target_keys: Int[Tensor, "batch 2"],
                top_k: int) -> Readout:
    top_probs, top_keys = merged.topk(min(top_k, merged.shape[1]), dim=-1)
    word_only = merged.masked_fill(~index.is_word_key.to(merged.device), -1.0)
    word_probs, word_keys = word_only.topk(2, dim=-1)
    word_probs = word_probs.clamp(min=0.0)  # fewer than two letter-only entries: the missing one has mass 0
    found = target_keys >= 0
    target_probs = merged.gather(1, target_keys.clamp(min=0).to(merged.device)) * found.to(merged.device)
    return Readout(top_keys.cpu(), top_probs.cpu(), word_keys.cpu(), word_probs.cpu(), target_probs.cpu())


@torch.no_grad()
def probe(model, prompts: Sequence[Sequence[int]], pad_id: int, index: VocabIndex,
          target_keys: Int[Tensor, "prompt 2"] | None = None, top_k: int = 20, batch_size: int = 32,
          device: torch.device | str = "cpu", share_prefixes: bool = True) -> Readout:
    """Readouts of every prompt, in order. A prefix that several prompts share is computed once
    (`tunelens.lm.prefix`; `share_prefixes=False`: whole prompts, grouped by length); every row gets the
    distribution it gets alone."""
    n = len(prompts)
    if target_keys is None:
        target_keys = torch.full((n, 2), -1, dtype=torch.long)
    assert target_keys.shape == (n, 2), f"target_keys {tuple(target_keys.shape)} for {n} prompts"
    if n == 0:
        empty = torch.zeros(0, 2)
        return Readout(torch.zeros(0, top_k, dtype=torch.long), torch.zeros(0, top_k), empty.long(), empty, empty)
    order: list[int] = []
    parts: list[Readout] = []
    for rows, probs in next_token_probs_batches(model, prompts, pad_id, batch_size, device, share_prefixes):
        order += rows
        parts.append(read_merged(merge_variants(probs, index), index, target_keys[rows], top_k))
    inverse = torch.empty(n, dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(n)
    return Readout(*(torch.cat([getattr(p, name) for p in parts])[inverse]
                     for name in ("top_keys", "top_probs", "word_keys", "word_probs", "target_probs")))
