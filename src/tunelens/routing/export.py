"""A routed run as an ordinary model: the good LoRA branch merged into the base weights, the bad one dropped.

The result is a plain transformers directory (no tunelens code needed to load it) whose logits are those of the
run's `bad_ablated` mode. Only LoRA good branches can be merged: an MLP adapter's ReLU bottleneck is not a change
of any existing weight. A run without a good branch (the fine-tuned variant: trained base weights are the good
parameters) exports too, whatever its bad branch is.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tunelens.config import UsageError
from tunelens.routing import adapters


def load_routed(run_dir: str | Path, device: str | torch.device = "cpu"):
    """(model with the run's adapters, adapter settings) from a caps run directory."""
    from tunelens.lm.loading import load_model, resolve_name

    if not Path(run_dir).is_dir():
        raise UsageError(f"run directory not found: {run_dir}")
    folder = Path(run_dir) / "adapters"
    settings, base = adapters.read_adapter_config(folder)
    if base is None:
        raise UsageError(f"{folder}: the adapter config names no base model")
    model = load_model(resolve_name(base), device=device)  # a directory that is not a model: one line there
    adapters.load_adapters(model, folder)
    return model.eval(), settings


@torch.no_grad()
def merge_good(model: nn.Module) -> nn.Module:
    """Fold each good LoRA branch (at its scaling) into the wrapped linear layer and unwrap it, in place."""
    wrappers = [(name, module) for name, module in model.named_modules()
                if isinstance(module, adapters.DualAdapterLayer)]
    for name, wrapper in wrappers:
        base = wrapper.base_layer
        if "good" in wrapper.branches:
            if not isinstance(base, nn.Linear):
                raise UsageError("only LoRA adapters can be merged into the base weights (these are MLP adapters)")
            branch = wrapper.branches["good"]
            base.weight += (branch.delta_weight() * wrapper.scaling["good"]).to(base.weight.dtype)
        parent_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent_name), leaf, base)
    return model


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    settings, _ = adapters.read_adapter_config(Path(run_dir) / "adapters")
    if settings.kind != "lora" and settings.good_dim > 0:
        raise UsageError(f"{run_dir}: only LoRA adapters can be merged into the base weights; this run has "
                         f"{settings.kind} adapters")
    model, _ = load_routed(run_dir)
    merge_good(model)
    out = Path(out_dir)
    model.save_pretrained(out)
    folder = Path(run_dir) / "adapters"
    if (folder / "tokenizer_config.json").is_file():  # the run saves its tokenizer beside the adapters
        from tunelens.lm.loading import load_tokenizer

        load_tokenizer(folder, padding_side="right").save_pretrained(out)
    return out
