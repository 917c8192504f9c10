"""Toy models of superposition: ReLU(Wᵀ W x + b), optionally with frozen identity hidden layers (the `-id`
variants), trained here on sparse features (each on with probability p, value U[0, 1] when on).

Training is finicky: with the original settings some seeds leave a feature unrepresented, and no
decomposition can recover a feature the target never learned. So training is retried with the next seed
until every feature has a column of norm ≥ `min_feature_norm`, and the summary says how many tries it took.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch import Tensor, nn

from tunelens.spd.targets import CiPattern, Log, ToyTarget, cached_training, call_module, freeze, register_target


class TmsTargetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tms"] = "tms"
    n_features: PositiveInt = Field(5, description="Number of sparse input features.")
    n_hidden: PositiveInt = Field(2, description="Width of the bottleneck.")
    n_hidden_layers: NonNegativeInt = Field(0, description="Frozen identity layers inside the bottleneck.")
    feature_prob: float = Field(0.05, gt=0, le=1, description="Probability that a feature is on.")
    init_bias_to_zero: bool = Field(False, description="Start the output bias at zero.")
    train_steps: PositiveInt = Field(10_000, description="Target training steps (AdamW).")
    train_batch_size: PositiveInt = Field(1024, description="Target training batch size.")
    train_lr: PositiveFloat = Field(5e-3, description="Target training learning rate (constant).")
    train_seed: NonNegativeInt = Field(0, description="Seed of the first training attempt.")
    min_feature_norm: float = Field(0.5, ge=0, description="A feature counts as represented above this norm.")
    max_attempts: PositiveInt = Field(10, description="Training attempts (new seed each) before giving up.")
    abandon_at_frac: float | None = Field(None, gt=0, lt=1, description="At this fraction of train_steps, end an "
                                          "attempt early if some feature's column norm is still below "
                                          "abandon_below_norm (it will not be represented); null = never.")
    abandon_below_norm: float = Field(0.1, ge=0, description="See abandon_at_frac; at most min_feature_norm.")

    @model_validator(mode="after")
    def _abandoned_attempts_fail(self) -> TmsTargetConfig:
        # An attempt stopped early must fail the represented check; above min_feature_norm a half-trained W could pass.
        if self.abandon_below_norm > self.min_feature_norm:
            raise ValueError(f"abandon_below_norm ({self.abandon_below_norm}) must be at most min_feature_norm "
                             f"({self.min_feature_norm})")
        return self

    def module_names(self) -> list[str]:
        return ["linear1", *[f"hidden_layers.{i}" for i in range(self.n_hidden_layers)], "linear2"]


class TmsModel(nn.Module):
    """Frozen inference form: linear1 (W), identity hidden layers, linear2 (Wᵀ, bias), ReLU."""

    def __init__(self, n_features: int, n_hidden: int, n_hidden_layers: int):
        super().__init__()
        self.linear1 = nn.Linear(n_features, n_hidden, bias=False)
        self.hidden_layers = nn.ModuleList(nn.Linear(n_hidden, n_hidden, bias=False) for _ in range(n_hidden_layers))
        self.linear2 = nn.Linear(n_hidden, n_features, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear1(x)
        for layer in self.hidden_layers:
            h = layer(h)
        return torch.relu(self.linear2(h))

    def load_tied(self, W: Tensor, b: Tensor) -> TmsModel:
        with torch.no_grad():
            self.linear1.weight.copy_(W)
            self.linear2.weight.copy_(W.T)
            self.linear2.bias.copy_(b)
            for layer in self.hidden_layers:
                layer.weight.copy_(torch.eye(W.shape[0]))
        return self


def sparse_features(batch_size: int, n_features: int, prob: float, low: float, generator: torch.Generator | None,
                    device: torch.device | str = "cpu") -> Tensor:
    """Each feature independently on with probability `prob`, value U[low, 1] when on (all-zero rows occur)."""
    on = torch.rand(batch_size, n_features, generator=generator, device=device) < prob
    values = torch.rand(batch_size, n_features, generator=generator, device=device) * (1 - low) + low
    return values * on


def train_tms_weights(config: TmsTargetConfig, seed: int) -> tuple[Tensor, Tensor, float]:
    """Tied-weight training of ReLU(Wᵀ W x + b) on reconstruction; returns W, b and the final loss. With
    `abandon_at_frac`, an attempt whose weakest column is still below `abandon_below_norm` at that point stops
    there (its W then fails the caller's check); an attempt that goes on is the same as without the check."""
    generator = torch.Generator().manual_seed(seed)
    W = nn.Parameter(torch.empty(config.n_hidden, config.n_features))
    nn.init.kaiming_uniform_(W, a=math.sqrt(5), generator=generator)
    b = nn.Parameter(torch.zeros(config.n_features) if config.init_bias_to_zero
                     else (torch.rand(config.n_features, generator=generator) - 0.5) / math.sqrt(config.n_hidden))
    optimizer = torch.optim.AdamW([W, b], lr=config.train_lr, weight_decay=0.01)
    loss = torch.tensor(float("nan"))
    check = round(config.abandon_at_frac * config.train_steps) if config.abandon_at_frac is not None else -1
    for step in range(config.train_steps):
        if step == check and W.detach().norm(dim=0).min() < config.abandon_below_norm:
            break
        x = sparse_features(config.train_batch_size, config.n_features, config.feature_prob, 0.0, generator)
        loss = (torch.relu(x @ W.T @ W + b) - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return W.detach(), b.detach(), loss.item()


def train_represented(config: TmsTargetConfig, log: Log) -> tuple[dict[str, Tensor], dict]:
    for attempt in range(config.max_attempts):
        seed = config.train_seed + attempt
        W, b, loss = train_tms_weights(config, seed)
        norms = W.norm(dim=0)
        n_represented = int((norms >= config.min_feature_norm).sum())
        log(f"target attempt {attempt + 1} (seed {seed}): loss {loss:.3e}, "
            f"{n_represented}/{config.n_features} features represented")
        if n_represented == config.n_features:
            break
    else:
        log(f"warning: no attempt represented all {config.n_features} features; using the last one")
    info = {"target_loss": loss, "target_seed": seed, "target_attempts": attempt + 1,
            "target_features_represented": n_represented}
    model = TmsModel(config.n_features, config.n_hidden, config.n_hidden_layers).load_tied(W, b)
    return dict(model.state_dict()), info


@register_target("tms")
def build_tms_target(config: TmsTargetConfig, device: torch.device, log: Log,
                     weights: dict[str, Tensor] | None = None) -> ToyTarget:
    """The trained (cached) target, or the given weights (e.g. a finished run's target.safetensors)."""
    info: dict = {}
    if weights is None:
        weights, info = cached_training("tms", config, lambda: train_represented(config, log), log)
    model = TmsModel(config.n_features, config.n_hidden, config.n_hidden_layers)
    model.load_state_dict(weights)
    model = freeze(model.to(device))
    names = config.module_names()
    patterns = [CiPattern(("linear1",), "identity", config.n_features),
                CiPattern(("linear2",), "identity", config.n_features)]
    patterns += [CiPattern((name,), "dense", config.n_hidden) for name in names if name.startswith("hidden")]

    def sample(batch_size: int) -> Tensor:
        return sparse_features(batch_size, config.n_features, config.feature_prob, 0.0, None, device)

    return ToyTarget(model=model, forward_fn=call_module, module_names=names, sample_batch=sample,
                     output_loss="mse", tied_modules={"linear2": "linear1"}, info=info,
                     one_hot_inputs=0.75 * torch.eye(config.n_features, device=device), ci_patterns=patterns,
                     ground_truth_axes={"linear1": "in", "linear2": "out"})
