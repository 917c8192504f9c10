"""Losses that pull the next-token distribution at the answer position towards the asked-for one.

The model's distribution is reduced to three buckets: the two target tokens and the rest,
m = [P(t1), P(t2), 1 − P(t1) − P(t2)], and the target is t = [p, q, 0]:

    tvd_loss = ½ Σ_i |m_i − t_i|                     (the aligned TVD itself, mass outside counted)
    kl_loss  = Σ_i t_i log(t_i / m_i) = KL(t ‖ m)    (0 log 0 = 0, so the rest bucket enters through m1 + m2)

For the random cases the two tokens are the model's current two most likely letter-only tokens, and the loss is
the smaller of the two assignments of [p, q] to them, so it does not care which of its words gets p.
The answer position is the last real token of each row (the prefill's last token), found from the attention
mask; it is not position 0, which is what the original study's loss read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tunelens.lm.scoring import last_real_positions, logits_at

LossKind = Literal["tvd", "kl"]
EPS = 1e-12


def answer_buckets(answer_logits: Float[Tensor, "batch vocab"], token_ids: Int[Tensor, "batch 2"]
                   ) -> Float[Tensor, "batch 3"]:
    probs = answer_logits.float().softmax(-1)
    two = probs.gather(1, token_ids)
    return torch.cat([two, (1.0 - two.sum(-1, keepdim=True)).clamp(min=0.0)], dim=-1)


def tvd_loss(buckets: Float[Tensor, "batch 3"], target: Float[Tensor, "batch 3"]) -> Float[Tensor, "batch"]:
    return 0.5 * (buckets - target).abs().sum(-1)


def kl_loss(buckets: Float[Tensor, "batch 3"], target: Float[Tensor, "batch 3"]) -> Float[Tensor, "batch"]:
    return (torch.xlogy(target, target) - target * buckets.clamp(min=EPS).log()).sum(-1)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"tvd": tvd_loss, "kl": kl_loss}


def order_free(loss: Callable[[Tensor, Tensor], Tensor], buckets: Float[Tensor, "batch 3"],
               target: Float[Tensor, "batch 3"]) -> Float[Tensor, "batch"]:
    """The smaller loss of [p, q, 0] and [q, p, 0]."""
    return torch.minimum(loss(buckets, target), loss(buckets, target[:, [1, 0, 2]]))


def output_control_loss(logits: Float[Tensor, "batch seq vocab"], attention_mask: Int[Tensor, "batch seq"],
                        given_ids: Int[Tensor, "batch 2"], shares: Float[Tensor, "batch 2"],
                        word_tokens: Bool[Tensor, "vocab"], kind: LossKind = "tvd") -> Float[Tensor, "batch"]:
    """Per-row loss at the answer position. `given_ids` holds the two words' tokens, or -1 for a random-case row,
    whose targets are then its current top-2 tokens among `word_tokens`."""
    assert given_ids.shape == shares.shape == (logits.shape[0], 2), f"{given_ids.shape} {shares.shape}"
    answer = logits_at(logits, last_real_positions(attention_mask))
    is_random = given_ids[:, 0] < 0
    own_words = answer.detach().masked_fill(~word_tokens.to(answer.device), float("-inf")).topk(2, dim=-1).indices
    token_ids = torch.where(is_random[:, None], own_words, given_ids)
    buckets = answer_buckets(answer, token_ids)
    target = torch.cat([shares, torch.zeros_like(shares[:, :1])], dim=-1).to(buckets)
    loss = LOSSES[kind]
    return torch.where(is_random, order_free(loss, buckets, target), loss(buckets, target))
