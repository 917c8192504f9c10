"""Models that SPD decomposes, and the contract between them and the rest of the study.

Every target gives a `Target`: a frozen model, how to call it, batches, the layers to decompose and the output
loss. Toy targets (`ToyTarget`: tms, resid_mlp) are built so that the right decomposition is known, and add what
it should look like; language-model targets (`targets.lm.LmTarget`) add a tokenizer and held-out text. Each
target module registers its builder under its config's `kind`; the config classes live in those modules, so a
config of a kind exists only once its builder is registered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from jaxtyping import Float
from pydantic import BaseModel
from torch import Tensor, nn

from tunelens.cache import cached
from tunelens.runs import load_tensors, save_tensors, write_json

Log = Callable[[str], None]


@dataclass(frozen=True)
class CiPattern:
    """Expected importance pattern of a group of layers on one-hot inputs (their columns concatenated)."""

    layers: tuple[str, ...]
    kind: Literal["identity", "dense"]
    k: int  # dense: number of subcomponents always on together (unused for identity)


@dataclass(kw_only=True)
class Target:
    """What SPD needs of any model it decomposes."""

    model: nn.Module
    forward_fn: Callable[[nn.Module, Tensor], Tensor]
    module_names: list[str]
    sample_batch: Callable[[int], Tensor]
    output_loss: Literal["mse", "kl"]
    tied_modules: dict[str, str] = field(default_factory=dict)  # layer -> layer whose weight is its transpose
    # the name of a list of blocks that run one after the other, each on the previous one's output, and the
    # blocks: masked passes skip those before the first decomposed layer (`ComponentModel`); None: run them all
    blocks: tuple[str, nn.ModuleList] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def eval_batch(self, batch_size: int) -> Tensor:
        """Fresh samples, unless a target holds data out for evaluation."""
        return self.sample_batch(batch_size)

    def weights_to_save(self) -> dict[str, Tensor] | None:
        """The weights a run saves to be reloaded from (None: the model is reloaded from where it came from)."""
        return dict(self.model.state_dict())


@dataclass(kw_only=True)
class ToyTarget(Target):
    """A toy model whose right decomposition is known: the importance pattern it should give on one-hot inputs
    (scaled unit vectors, one per feature), and for some layers the rank-one pieces themselves (the columns,
    axis "in", or rows, axis "out", of the target weight)."""

    one_hot_inputs: Float[Tensor, "n_features n_features"]
    ci_patterns: list[CiPattern]
    ground_truth_axes: dict[str, Literal["in", "out"]] = field(default_factory=dict)


class TargetBuilder(Protocol):
    def __call__(self, config: Any, device: torch.device, log: Log,
                 weights: dict[str, Tensor] | None = None) -> Target: ...


BUILDERS: dict[str, TargetBuilder] = {}


def register_target(kind: str) -> Callable[[TargetBuilder], TargetBuilder]:
    """Builder of the target whose config has `kind`; `weights`, when given, replace training (a reload)."""

    def add(builder: TargetBuilder) -> TargetBuilder:
        assert kind not in BUILDERS, f"two builders for target kind '{kind}'"
        BUILDERS[kind] = builder
        return builder

    return add


def build_target(config: Any, device: torch.device, log: Log, weights: dict[str, Tensor] | None = None) -> Target:
    """The target described by a target config (`SpdConfig.target`)."""
    if config.kind not in BUILDERS:
        raise KeyError(f"no builder registered for target kind '{config.kind}' (have: {', '.join(BUILDERS)})")
    return BUILDERS[config.kind](config, device, log, weights)


def call_module(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def freeze(model: nn.Module) -> nn.Module:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def cached_training(kind: str, config: BaseModel, train: Callable[[], tuple[dict[str, Tensor], dict[str, Any]]],
                    log: Log) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and info of a target trained from `config`, reused when the same config was trained before."""

    def build(folder: Path) -> None:
        with torch.random.fork_rng(devices=[]):  # a cache miss must not shift the run's random stream
            weights, info = train()
        save_tensors(folder / "weights.safetensors", weights)
        write_json(folder / "info.json", info)

    folder = cached(f"targets/{kind}", config, build, log)
    return load_tensors(folder / "weights.safetensors"), json.loads((folder / "info.json").read_text())
