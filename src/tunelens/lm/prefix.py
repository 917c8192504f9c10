"""Next-token distributions of many prompts that share prefixes, each shared prefix computed once.

Evaluation prompts are mostly the same text: the same instructions and in-context examples, then a few words that
differ. `next_token_probs_batches` plans groups of prompts with a common prefix (`plan_groups`), runs each group's
prefix once (many groups per forward pass), keeps its keys and values, and runs only the members' remaining tokens
on top of them. Every row gets the distribution it gets alone: prefixes and suffixes are left-padded, the padding
is masked, and position ids count real tokens only (the prefix's, then the suffix's).

Plan. Sorted lexicographically, prompts with a common prefix are neighbours, and the common prefix of a run of
neighbours is the smallest common prefix of adjacent pairs. A run i..j of k prompts sharing L tokens costs
`L + Σ (len − L)` token positions instead of `Σ len`; L is at most the shortest member's length − 1, so every
member keeps at least its last token for the suffix pass that reads the distribution. `plan_groups` picks the runs
(at most `max_group` prompts each) that minimise the total by dynamic programming over the sorted order.

Caches: only models whose cache is made of plain full-attention layers (`DynamicLayer`; Llama, Qwen, GPT-2, OLMo,
...) share prefixes; anything else (sliding-window or hybrid caches) falls back to whole prompts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tunelens.lm.batching import pad_batch
from tunelens.lm.scoring import next_token_probs, real_positions


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class PrefixGroup:
    prefix_len: int  # tokens every member shares (0: run whole prompts)
    members: tuple[int, ...]  # prompt indices


def plan_groups(prompts: Sequence[Sequence[int]], max_group: int = 64) -> list[PrefixGroup]:
    """Groups of prompts sharing a prefix that minimise the token positions to compute (see the module doc).
    Every prompt is in exactly one group; groups come in sorted prompt order."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    n = len(order)
    lengths = [len(prompts[i]) for i in order]
    adjacent = [common_prefix(prompts[order[i]], prompts[order[i + 1]]) for i in range(n - 1)]
    best = [0] * (n + 1)  # best[j]: cheapest plan of the first j sorted prompts
    choice = [(0, 0)] * (n + 1)  # (start of the last run, its shared length)
    for j in range(1, n + 1):
        shared, shortest, total = 1 << 62, lengths[j - 1], 0
        best[j], choice[j] = 1 << 62, (j - 1, 0)
        for i in range(j - 1, max(-1, j - 1 - max_group), -1):  # run order[i:j]
            total += lengths[i]
            shortest = min(shortest, lengths[i])
            if i < j - 1:
                shared = min(shared, adjacent[i])
            length = min(shared, shortest - 1) if i < j - 1 else 0
            cost = best[i] + total - (j - i - 1) * length
            if cost < best[j]:
                best[j], choice[j] = cost, (i, length)
    groups: list[PrefixGroup] = []
    j = n
    while j > 0:
        i, length = choice[j]
        groups.append(PrefixGroup(length, tuple(order[i:j])))
        j = i
    return groups[::-1]


def planned_positions(prompts: Sequence[Sequence[int]], groups: Sequence[PrefixGroup]) -> int:
    """Token positions a plan computes (prefixes once, then every member's remaining tokens)."""
    return sum(g.prefix_len + sum(len(prompts[m]) - g.prefix_len for m in g.members) for g in groups)


def _shares_prefixes(cache) -> bool:
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:  # a transformers without per-layer caches: run whole prompts
        return False
    return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _select_rows(cache, rows: Tensor):
    from transformers.cache_utils import DynamicCache

    return DynamicCache(ddp_cache_data=[(layer.keys[rows], layer.values[rows]) for layer in cache.layers])


@torch.no_grad()
def next_token_probs_batches(model, prompts: Sequence[Sequence[int]], pad_id: int, batch_size: int = 32,
                             device: torch.device | str = "cpu", share_prefixes: bool = True
                             ) -> Iterator[tuple[list[int], Float[Tensor, "batch vocab"]]]:
    """(prompt indices, their full-vocabulary next-token distributions after the last token), batch by batch, in
    an order of the plan's choosing. With `share_prefixes` False (or a cache that cannot be shared) every batch
    is up to `batch_size` whole prompts grouped by length."""
    if not prompts:
        return
    if not share_prefixes:
        yield from _whole_prompts(model, prompts, range(len(prompts)), pad_id, batch_size, device)
        return
    groups = plan_groups(prompts, max_group=batch_size)
    if all(g.prefix_len == 0 for g in groups):
        yield from _whole_prompts(model, prompts, range(len(prompts)), pad_id, batch_size, device)
        return
    for start in range(0, len(groups), batch_size):  # up to batch_size prefixes per pass, then their members
        yield from _chunk(model, prompts, groups[start:start + batch_size], pad_id, batch_size, device)


def _whole_prompts(model, prompts, indices, pad_id, batch_size, device):
    order = sorted(indices, key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        ids, mask = pad_batch([prompts[i] for i in rows], pad_id, side="left")
        yield rows, next_token_probs(model, ids.to(device), mask.to(device))


def _chunk(model, prompts, groups: list[PrefixGroup], pad_id, batch_size, device):
    shared = [g for g in groups if g.prefix_len > 0]
    alone = [m for g in groups if g.prefix_len == 0 for m in g.members]
    if alone:
        yield from _whole_prompts(model, prompts, alone, pad_id, batch_size, device)
    if not shared:
        return
    prefix_ids, prefix_mask = pad_batch([prompts[g.members[0]][:g.prefix_len] for g in shared], pad_id, side="left")
    prefix_ids, prefix_mask = prefix_ids.to(device), prefix_mask.to(device)
    out = model(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=real_positions(prefix_mask),
                use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    if not _shares_prefixes(cache):
        yield from _whole_prompts(model, prompts, [m for g in shared for m in g.members], pad_id, batch_size, device)
        return
    rows = [(gi, m) for gi, g in enumerate(shared) for m in g.members]
    rows.sort(key=lambda r: len(prompts[r[1]]) - shared[r[0]].prefix_len)
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        group_rows = torch.tensor([gi for gi, _ in part], device=device)
        suffix_ids, suffix_mask = pad_batch([prompts[m][shared[gi].prefix_len:] for gi, m in part], pad_id,
                                            side="left")
        suffix_ids, suffix_mask = suffix_ids.to(device), suffix_mask.to(device)
        before = prefix_mask[group_rows]
        mask = torch.cat([before, suffix_mask], dim=1)
        position_ids = before.sum(-1, keepdim=True) + real_positions(suffix_mask)
        logits = model(input_ids=suffix_ids, attention_mask=mask, position_ids=position_ids,
                       past_key_values=_select_rows(cache, group_rows), use_cache=True, logits_to_keep=1).logits
        yield [m for _, m in part], logits[:, -1].float().softmax(-1)
