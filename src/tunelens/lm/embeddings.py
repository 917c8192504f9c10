"""Adding new special tokens to a model, with embedding rows drawn at the scale of the existing ones."""

from __future__ import annotations

import torch


def add_special_tokens(model, tokenizer, tokens: list[str], generator: torch.Generator | None = None) -> list[int]:
    """Add `tokens`; new rows are truncated-normal directions rescaled to the median norm of the old rows, so a
    new token starts neither dominant nor negligible. Returns the new token ids."""
    n_before = len(tokenizer)
    tokenizer.add_tokens(tokens, special_tokens=True)
    new_ids = tokenizer.convert_tokens_to_ids(tokens)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    with torch.no_grad():
        for weight in matrices:
            init_new_rows(weight, n_before, generator)
    return new_ids


def init_new_rows(weight: torch.Tensor, n_old: int, generator: torch.Generator | None = None) -> None:
    median_norm = weight[:n_old].norm(dim=-1).median()
    rows = torch.empty(weight.shape[0] - n_old, weight.shape[1])
    torch.nn.init.trunc_normal_(rows, std=1.0, a=-2.0, b=2.0, generator=generator)
    rows = rows / rows.norm(dim=-1, keepdim=True) * median_norm
    weight[n_old:] = rows.to(weight.dtype).to(weight.device)
