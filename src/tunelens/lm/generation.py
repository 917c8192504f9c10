"""Batched sampling with temperature and nucleus (top-p) filtering.

Prompts are left-padded so that every row's last position is a real token; position ids count only real tokens,
so a padded row continues exactly as it would alone. Keys and values are cached between steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tunelens.lm.batching import pad_batch
from tunelens.lm.scoring import real_positions


def top_p_filter(logits: Float[Tensor, "batch vocab"], top_p: float) -> Float[Tensor, "batch vocab"]:
    """Keep the smallest set of tokens whose probability reaches top_p (always at least the most likely one)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    sorted_probs = sorted_logits.softmax(-1)
    remove = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # mass before this token already reaches top_p
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def next_tokens(logits: Float[Tensor, "batch vocab"], temperature: float, top_p: float,
                generator: torch.Generator | None = None) -> Int[Tensor, "batch"]:
    """Temperature 0 is greedy decoding; draws use `generator` on the CPU so they do not depend on the device."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = top_p_filter(logits.float() / temperature, top_p).softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str] | None = None, max_new_tokens: int = 64, temperature: float = 1.0,
           top_p: float = 1.0, generator: torch.Generator | None = None, stop: Sequence[str] = (),
           prompt_ids: Sequence[Sequence[int]] | None = None) -> list[str]:
    """Continue each prompt; a row stops at EOS or once its text contains a stop string.

    Prompts are encoded with the tokenizer's own special tokens (e.g. BOS); pass `prompt_ids` instead for prompts
    encoded elsewhere (a chat template with a prefill: `tunelens.lm.examples.encode_prompt`). Returns only the
    continuations, decoded without the EOS and cut before the first stop string."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature} and {top_p}")
    if (prompts is None) == (prompt_ids is None):
        raise ValueError("give either prompts or prompt_ids")
    device = next(model.parameters()).device
    encoded = [list(ids) for ids in prompt_ids] if prompt_ids is not None else tokenizer(list(prompts))["input_ids"]
    if not all(encoded):
        raise ValueError("every prompt must encode to at least one token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, mask = (t.to(device) for t in pad_batch(encoded, pad_id, side="left"))
    positions = real_positions(mask)
    finished = torch.zeros(len(encoded), dtype=torch.bool, device=device)
    new_tokens: list[Tensor] = []
    past = None
    for _ in range(max_new_tokens):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True)
        past = out.past_key_values
        token = torch.where(finished, pad_id, next_tokens(out.logits[:, -1], temperature, top_p, generator))
        new_tokens.append(token)
        finished |= token == tokenizer.eos_token_id
        if stop:
            finished |= _has_stop(torch.stack(new_tokens, dim=1).tolist(), tokenizer, stop, device)
        ids, positions = token[:, None], positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        if finished.all():
            break
    rows = torch.stack(new_tokens, dim=1).tolist()
    return [_cut_at_stop(tokenizer.decode(_until_eos(row, tokenizer.eos_token_id)), stop) for row in rows]


def sample_batched(model, tokenizer, batch_size: int, prompts: Sequence[str] | None = None,
                   prompt_ids: Sequence[Sequence[int]] | None = None, **kwargs) -> list[str]:
    """`sample` over `batch_size` prompts at a time (rows of similar count per pass bound the memory); one
    generator passed in `kwargs` carries over from batch to batch, so the draws depend only on the order."""
    if (prompts is None) == (prompt_ids is None):
        raise ValueError("give either prompts or prompt_ids")
    items = list(prompts if prompts is not None else prompt_ids)
    key = "prompts" if prompts is not None else "prompt_ids"
    return [c for start in range(0, len(items), batch_size)
            for c in sample(model, tokenizer, **{key: items[start:start + batch_size]}, **kwargs)]


def _has_stop(rows: list[list[int]], tokenizer, stop: Sequence[str], device: torch.device) -> Tensor:
    texts = [tokenizer.decode(_until_eos(row, tokenizer.eos_token_id)) for row in rows]
    return torch.tensor([any(s in text for s in stop) for text in texts], device=device)


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((text.index(s) for s in stop if s in text), default=len(text))
    return text[:cut]


def _until_eos(token_ids: list[int], eos_id: int | None) -> list[int]:
    return token_ids[: token_ids.index(eos_id)] if eos_id in token_ids else token_ids
