"""Adding new special tokens to a model, with embedding rows drawn at the scale of the existing ones.

This is how the hops benchmark prepares its checkpoints: a new token's row is a truncated-normal direction
rescaled to the median norm of the rows already trained, so it starts neither dominant nor negligible.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def rows_at_median_norm(existing: Float[Tensor, "n_old d_model"], n_new: int,
                        generator: torch.Generator | None = None) -> Float[Tensor, "n_new d_model"]:
    """Random directions (truncated normal, +-2 sigma) with the median norm of `existing`."""
    rows = torch.empty(n_new, existing.shape[1])
    torch.nn.init.trunc_normal_(rows, std=1.0, a=-2.0, b=2.0, generator=generator)
    median_norm = existing.detach().float().norm(dim=-1).median().cpu()
    return rows / rows.norm(dim=-1, keepdim=True) * median_norm


def add_special_tokens(model, tokenizer, tokens: list[str], generator: torch.Generator | None = None) -> list[int]:
    """Add `tokens` to the tokenizer and the model; returns their ids.

    A row counts as trained when both the tokenizer and the matrix had it before; rows are drawn for the ids past
    that, in the input embedding and, when it is a separate matrix, the output embedding. The matrix only grows:
    checkpoints that already have spare rows (Qwen) keep their size, and the spare rows the new ids land on are
    drawn like any new row.
    """
    n_trained = min(len(tokenizer), model.get_input_embeddings().weight.shape[0])
    tokenizer.add_special_tokens({"extra_special_tokens": tokens}, replace_extra_special_tokens=False)
    token_ids = tokenizer.convert_tokens_to_ids(tokens)
    fresh = [token_id for token_id in token_ids if token_id >= n_trained]
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    with torch.no_grad():
        for weight in matrices:
            rows = rows_at_median_norm(weight[:n_trained], len(fresh), generator)
            weight[fresh] = rows.to(weight.dtype).to(weight.device)
    return token_ids
