"""Pooled activations and activation gradients of rows at each decoder block, computed once and batched.

For a row, the residual stream after each block is pooled over positions:
- `mean`: the mean over the positions that predict a target (every position but the last: for a document all its
  tokens but the final one, for a query its prompt);
- `last`: the last position that predicts a target (a query's final prompt token, whose output is the answer).
Gradients are of the row's own loss (a document's training loss, a query's answer loss) with respect to the stream,
pooled the same way; rows are independent, so one backward of the summed loss gives each row's gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tunelens.lm.examples import Batch, TokenizedExample, batches_by_length, collate
from tunelens.lm.layers import decoder_layers, residual_stream
from tunelens.lm.scoring import per_example_loss

Pooling = Literal["mean", "last"]


def pooling_weights(batch: Batch, pooling: Pooling) -> Float[Tensor, "batch seq"]:
    """Weights over positions (rows sum to 1) of the positions that predict a target."""
    predicts = torch.zeros_like(batch.loss_mask, dtype=torch.float32)
    predicts[:, :-1] = batch.loss_mask[:, 1:].float()
    if pooling == "last":
        positions = torch.arange(predicts.shape[1], device=predicts.device)
        last = (positions * (predicts > 0)).amax(-1)
        predicts = torch.zeros_like(predicts)
        predicts[torch.arange(len(last)), last] = 1.0
    elif pooling == "mean":
        span = torch.zeros_like(predicts)  # every real position but the last
        lengths = batch.attention_mask.sum(-1)
        positions = torch.arange(span.shape[1], device=span.device)
        span[positions[None] < (lengths[:, None] - 1)] = 1.0
        predicts = torch.where(span.sum(-1, keepdim=True) > 0, span, predicts)
    else:
        raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
    return predicts / predicts.sum(-1, keepdim=True).clamp(min=1)


def pool(stream: Float[Tensor, "batch seq d"], weights: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch d"]:
    return torch.einsum("bsd,bs->bd", stream.float(), weights)


def stream_batches(model: nn.Module, rows: Sequence[TokenizedExample], pad_id: int, with_grad: bool = False,
                   batch_size: int = 64, device: torch.device | str = "cpu",
                   rewrite: Callable[[Batch], dict[int, Callable[[Tensor], Tensor]]] | None = None,
                   ) -> Iterator[tuple[list[int], Batch, list[Tensor], list[Tensor] | None]]:
    """Per batch of rows (grouped by length): (row indices, batch, stream after each block, gradient of the rows'
    summed loss at each block or None), token by token. `rewrite(batch)` may replace block outputs (see
    `residual_stream`), e.g. to interpolate."""
    n_layers = len(decoder_layers(model))
    was_training = model.training
    model.eval()
    try:
        for chosen in batches_by_length(rows, batch_size):
            batch = collate([rows[i] for i in chosen], pad_id).to(device)
            with torch.set_grad_enabled(with_grad), residual_stream(model, rewrite=rewrite(batch) if rewrite else None
                                                                    ) as recorded:
                recorded_grads: dict[int, Tensor] = {}
                if with_grad:
                    logits = _forward_keeping_grads(model, batch, recorded_grads)
                    per_example_loss(logits, batch.input_ids, batch.loss_mask).sum().backward()
                else:
                    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            yield (chosen, batch, [recorded[i].detach() for i in range(n_layers)],
                   [recorded_grads[i] for i in range(n_layers)] if with_grad else None)
    finally:
        model.train(was_training)


def pooled_states(model: nn.Module, rows: Sequence[TokenizedExample], pad_id: int, pooling: Pooling = "mean",
                  with_grad: bool = False, batch_size: int = 64, device: torch.device | str = "cpu",
                  rewrite: Callable[[Batch], dict[int, Callable[[Tensor], Tensor]]] | None = None,
                  ) -> tuple[Float[Tensor, "row layer d"], Float[Tensor, "row layer d"] | None]:
    """(pooled stream after every block, pooled gradient of the row's loss at it, or None), rows in input order."""
    states: Tensor | None = None
    grads: Tensor | None = None
    for chosen, batch, streams, stream_grads in stream_batches(model, rows, pad_id, with_grad, batch_size, device,
                                                               rewrite):
        weights = pooling_weights(batch, pooling)
        pooled = torch.stack([pool(stream, weights) for stream in streams], 1).cpu()
        if states is None:
            states = torch.zeros(len(rows), len(streams), pooled.shape[-1])
            grads = torch.zeros_like(states) if with_grad else None
        states[chosen] = pooled
        if stream_grads is not None and grads is not None:
            grads[chosen] = torch.stack([pool(g, weights) for g in stream_grads], 1).cpu()
    assert states is not None, "no rows"
    return states, grads


def path_gradients(new: nn.Module, old: nn.Module, rows: Sequence[TokenizedExample], pad_id: int, layers: list[int],
                   steps: int, pooling: Pooling = "mean", batch_size: int = 64, device: torch.device | str = "cpu"
                   ) -> Float[Tensor, "row layer d"]:
    """For each chosen block l, the pooled gradient of the row's loss averaged over `steps` points (midpoint rule)
    of the straight path from the old model's stream after block l to the new model's: the new model runs with
    its stream after block l replaced by h_old + α (h_new − h_old). The old model runs once per batch."""
    n_layers = len(decoder_layers(new))
    out: Tensor | None = None
    new.eval()
    for chosen in batches_by_length(rows, batch_size):
        batch = collate([rows[i] for i in chosen], pad_id).to(device)
        weights = pooling_weights(batch, pooling)
        with torch.no_grad(), residual_stream(old, layers) as recorded:
            old(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        for layer in layers:
            old_stream = recorded[layer]
            total = None
            for step in range(steps):
                alpha = (step + 0.5) / steps
                rewrite = {layer: lambda stream, a=alpha, o=old_stream: o + a * (stream - o)}
                grads: dict[int, Tensor] = {}
                with residual_stream(new, [], rewrite=rewrite):
                    logits = _forward_keeping_grads(new, batch, grads)
                per_example_loss(logits, batch.input_ids, batch.loss_mask).sum().backward()
                pooled = pool(grads[layer], weights)
                total = pooled if total is None else total + pooled
            assert total is not None
            if out is None:
                out = torch.zeros(len(rows), n_layers, total.shape[-1])
            out[chosen, layer] = (total / steps).cpu()
    assert out is not None, "no rows"
    return out


def _forward_keeping_grads(model: nn.Module, batch: Batch, recorded_grads: dict[int, Tensor]) -> Tensor:
    """Forward that makes each recorded stream a tensor whose gradient is kept (frozen models have no graph
    otherwise)."""
    stack = decoder_layers(model)

    def hook_for(index: int):
        def hook(module: nn.Module, inputs, output):
            stream = output[0] if isinstance(output, tuple) else output
            if not stream.requires_grad:
                stream = stream.detach().requires_grad_(True)
            stream.register_hook(lambda g, i=index: recorded_grads.__setitem__(i, g.detach()))
            return (stream, *output[1:]) if isinstance(output, tuple) else stream
        return hook

    # registered after residual_stream's hooks, so these see (and pass on) the rewritten stream
    handles = [layer.register_forward_hook(hook_for(i)) for i, layer in enumerate(stack)]
    try:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits


__all__ = ["Pooling", "path_gradients", "pool", "pooled_states", "pooling_weights",
           "stream_batches"]
