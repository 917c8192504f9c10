"""Scoring a causal LM: next-token losses and log-probabilities under a mask, next-token distributions at the
answer position, and bootstrap intervals.

Conventions (shared by every study): position t of `logits` predicts token t+1 of `input_ids`, so a sequence of
length S has S − 1 targets; a mask is given per *input* position and selects the targets it covers, i.e.
`mask[:, 1:]`. Padding positions carry mask 0, so they never count.

    token_logprobs[b, t] = log softmax(logits[b, t])[input_ids[b, t + 1]]
    per_example_loss[b]  = − Σ_t m[b, t+1] token_logprobs[b, t] / Σ_t m[b, t+1]     (mean over the example's targets)
    next_token_ce        = − Σ_{b,t} m[b, t+1] token_logprobs[b, t] / Σ_{b,t} m[b, t+1] (mean over all targets)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


def token_logprobs(logits: Float[Tensor, "batch seq vocab"], input_ids: Int[Tensor, "batch seq"]
                   ) -> Float[Tensor, "batch seq_minus_1"]:
    """Log-probability of each next token; computed through cross_entropy so the vocab-sized log-softmax is
    never materialised."""
    return -F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), input_ids[:, 1:], reduction="none")


def _target_mask(input_ids: Tensor, loss_mask: Tensor | None) -> Tensor:
    if loss_mask is None:
        return torch.ones_like(input_ids[:, 1:], dtype=torch.float32)
    assert loss_mask.shape == input_ids.shape, f"mask {tuple(loss_mask.shape)} vs ids {tuple(input_ids.shape)}"
    return loss_mask[:, 1:].float()


def sequence_logprob(logits: Float[Tensor, "batch seq vocab"], input_ids: Int[Tensor, "batch seq"],
                     loss_mask: Int[Tensor, "batch seq"] | None = None) -> Float[Tensor, "batch"]:
    """Summed log-probability of the masked tokens of each row (log p(completion | prompt) with a completion mask)."""
    return (token_logprobs(logits, input_ids) * _target_mask(input_ids, loss_mask)).sum(-1)


def per_example_loss(logits: Float[Tensor, "batch seq vocab"], input_ids: Int[Tensor, "batch seq"],
                     loss_mask: Int[Tensor, "batch seq"] | None = None) -> Float[Tensor, "batch"]:
    """Mean next-token cross-entropy of each row over its masked targets (0 for a row with none)."""
    mask = _target_mask(input_ids, loss_mask)
    return -(token_logprobs(logits, input_ids) * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def next_token_ce(logits: Float[Tensor, "batch seq vocab"], input_ids: Int[Tensor, "batch seq"],
                  loss_mask: Int[Tensor, "batch seq"] | None = None) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over every masked target of the batch (all targets without a mask)."""
    mask = _target_mask(input_ids, loss_mask)
    return -(token_logprobs(logits, input_ids) * mask).sum() / mask.sum().clamp(min=1)


def real_positions(attention_mask: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch seq"]:
    """Position ids that count real tokens only (0 on left padding), so a padded row runs as it would alone."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def last_real_positions(attention_mask: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch"]:
    """Index of each row's last real token, for left or right padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.bool()).amax(-1)


def logits_at(logits: Float[Tensor, "batch seq vocab"], positions: Int[Tensor, "batch"]
              ) -> Float[Tensor, "batch vocab"]:
    return logits[torch.arange(len(positions), device=logits.device), positions]


@torch.no_grad()
def next_token_probs(model, input_ids: Int[Tensor, "batch seq"], attention_mask: Int[Tensor, "batch seq"]
                     ) -> Float[Tensor, "batch vocab"]:
    """Full-vocabulary next-token distribution after each row's last real token (one forward for the batch).

    Position ids count real tokens only, so a left-padded row gives the distribution it would give alone. When
    every row ends in a real token (left padding), only the final position's logits are computed: with a 150k
    vocabulary the logits of every position of a long batch would not fit in memory, and they are not needed."""
    position_ids = real_positions(attention_mask)
    if bool(attention_mask[:, -1].all()):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       logits_to_keep=1).logits
        return logits[:, -1].float().softmax(-1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    return logits_at(logits, last_real_positions(attention_mask)).float().softmax(-1)


def bootstrap_ci(values: Sequence[float] | Tensor, n_resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (seeded, so a reported interval can be reproduced)."""
    data = torch.as_tensor(values, dtype=torch.float64).flatten()
    if len(data) == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, len(data), (n_resamples, len(data)), generator=generator)
    means = data[draws].mean(-1)
    alpha = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return float(low), float(high)
