"""Models that SPD decomposes. Each target module builds a `Target`: a frozen model, how to call it, a batch
source, the layers to decompose, and what a perfect decomposition should look like where that is known."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from tunelens.cache import cached
from tunelens.runs import load_tensors, save_tensors, write_json


@dataclass(frozen=True)
class CiPattern:
    """Expected importance pattern of a group of layers on one-hot inputs (their columns concatenated)."""

    layers: tuple[str, ...]
    kind: Literal["identity", "dense"]
    k: int  # dense: number of subcomponents always on together (unused for identity)


@dataclass
class Target:
    model: nn.Module
    forward_fn: Callable[[nn.Module, Tensor], Tensor]
    module_names: list[str]
    sample_batch: Callable[[int], Tensor]
    output_loss: Literal["mse", "kl"]
    one_hot_inputs: Tensor | None = None
    ci_patterns: list[CiPattern] = field(default_factory=list)
    ground_truth_axes: dict[str, Literal["in", "out"]] = field(default_factory=dict)
    tied_modules: dict[str, str] = field(default_factory=dict)  # layer -> layer whose weight is its transpose
    info: dict[str, Any] = field(default_factory=dict)
    eval_batch: Callable[[int], Tensor] | None = None
    tokenizer: Any = None  # language-model targets: decodes token ids in figures
    save_weights: bool = True  # False for models loaded from elsewhere (no copy of a checkpoint per run)

    def state(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.model.state_dict().items()}


def call_module(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def freeze(model: nn.Module) -> nn.Module:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def cached_training(kind: str, config: BaseModel, train: Callable[[], tuple[dict[str, Tensor], dict[str, Any]]],
                    log: Callable[[str], None]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and info of a target trained from `config`, reused when the same config was trained before."""

    def build(folder: Path) -> None:
        with torch.random.fork_rng(devices=[]):  # a cache miss must not shift the run's random stream
            weights, info = train()
        save_tensors(folder / "weights.safetensors", weights)
        write_json(folder / "info.json", info)

    folder = cached(f"targets/{kind}", config, build, log)
    return load_tensors(folder / "weights.safetensors"), json.loads((folder / "info.json").read_text())
