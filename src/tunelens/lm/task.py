"""The per-example loss and measurement contract that attribution methods are handed.

Influence methods need two functions of a model and a batch (kronfluence calls them a Task): the training loss
of each training document, exactly as training optimised it, and the measurement of each query whose behaviour
is being explained. Here both are functions of the same `Batch` rows the training loop uses, so kronfluence,
bergson, checkpoint differences and any other ranker score documents by one definition:

    train loss of document d   = mean next-token loss over d's loss-masked tokens  (the trainer's objective)
    measurement of query q     = mean next-token loss of q's completion given its prompt

Batch-level values are sums over rows (kronfluence's convention), so per-example gradients of a summed loss are
the per-row gradients. `sample=True` replaces each target by a draw from the model's own next-token distribution,
the labels a true-Fisher estimate needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tunelens.lm.examples import Batch
from tunelens.lm.scoring import per_example_loss
from tunelens.lm.trainer import forward_logits


def sampled_targets(logits: Float[Tensor, "batch seq vocab"], input_ids: Tensor, generator: torch.Generator | None
                    ) -> Tensor:
    """input_ids with every token after the first replaced by a draw from the model's prediction for it."""
    probs = logits[:, :-1].detach().float().softmax(-1)
    draws = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=generator)
    sampled = input_ids.clone()
    sampled[:, 1:] = draws.view(probs.shape[:2]).to(input_ids.device)
    return sampled


@dataclass
class CompletionLossTask:
    """The default contract: documents and queries are both scored by their masked mean next-token loss."""

    generator: torch.Generator | None = None

    def row_train_loss(self, model: nn.Module, batch: Batch, sample: bool = False) -> Float[Tensor, "batch"]:
        logits = forward_logits(model, batch)
        targets = sampled_targets(logits, batch.input_ids, self.generator) if sample else batch.input_ids
        return per_example_loss(logits, targets, batch.loss_mask)

    def train_loss(self, model: nn.Module, batch: Batch, sample: bool = False) -> Float[Tensor, ""]:
        return self.row_train_loss(model, batch, sample).sum()

    def row_measurement(self, model: nn.Module, batch: Batch) -> Float[Tensor, "batch"]:
        return per_example_loss(forward_logits(model, batch), batch.input_ids, batch.loss_mask)

    def measurement(self, model: nn.Module, batch: Batch) -> Float[Tensor, ""]:
        return self.row_measurement(model, batch).sum()


def per_example_gradients(model: nn.Module, task: CompletionLossTask, batch: Batch,
                          params: dict[str, nn.Parameter] | None = None) -> dict[str, Float[Tensor, "batch ..."]]:
    """Gradient of each row's training loss for each trainable parameter (torch.func: one vmapped pass).

    The slow but obvious reference for ranking methods, and what their own per-example gradients are tested
    against."""
    from torch.func import functional_call, grad, vmap

    params = params or {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in params}
    frozen.update(dict(model.named_buffers()))

    def row_loss(weights: dict[str, Tensor], ids: Tensor, mask: Tensor) -> Tensor:
        # Rows are right-padded, so under the causal mask a real token never sees padding: the attention mask
        # (whose handling branches on its values, which vmap cannot follow) changes no counted logit.
        logits = functional_call(model, {**frozen, **weights}, (), {"input_ids": ids[None]}).logits
        return per_example_loss(logits, ids[None], mask[None])[0]

    assert not (batch.loss_mask.bool() & ~batch.attention_mask.bool()).any(), "loss on a padding position"
    detached = {n: p.detach() for n, p in params.items()}
    return vmap(grad(row_loss), in_dims=(None, 0, 0))(detached, batch.input_ids, batch.loss_mask)


__all__ = ["CompletionLossTask", "per_example_gradients", "sampled_targets"]
