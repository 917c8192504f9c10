"""Batched sampling with temperature and nucleus (top-p) filtering."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from tunelens.lm.batching import pad_batch


def top_p_filter(logits: Float[Tensor, "batch vocab"], top_p: float) -> Float[Tensor, "batch vocab"]:
    """Keep the smallest set of tokens whose probability reaches top_p (always at least the most likely one)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    remove = cumulative - sorted_logits.softmax(-1) >= top_p  # mass before this token already reaches top_p
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 64, temperature: float = 1.0,
           top_p: float = 1.0, generator: torch.Generator | None = None) -> list[str]:
    """Continue each prompt; stops a row at EOS. Temperature 0 is greedy decoding."""
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] or [tokenizer.bos_token_id] for p in prompts]
    ids, mask = pad_batch(encoded, tokenizer.pad_token_id, side="left")
    ids, mask = ids.to(device), mask.to(device)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    new_tokens = []
    for _ in range(max_new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            probs = top_p_filter(logits / temperature, top_p).softmax(-1)
            token = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(device)
        token = torch.where(finished, torch.full_like(token, tokenizer.pad_token_id), token)
        new_tokens.append(token)
        finished |= token == tokenizer.eos_token_id
        ids = torch.cat([ids, token[:, None]], dim=1)
        mask = torch.cat([mask, (~finished | (token == tokenizer.eos_token_id)).long()[:, None]], dim=1)
        if finished.all():
            break
    generated = torch.stack(new_tokens, dim=1).tolist()
    return [tokenizer.decode([t for t in row if t not in (tokenizer.pad_token_id, tokenizer.eos_token_id)])
            for row in generated]
