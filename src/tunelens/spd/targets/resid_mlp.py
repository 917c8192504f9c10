"""Residual MLPs doing compressed computation: 100 features embedded in a 1000-dim residual stream by a
fixed random unit-norm embedding W_E (unembedding W_Eᵀ), then n_layers blocks resid += W_out ReLU(W_in resid).
Trained to output y_i = x_i + ReLU(x_i) with features on with probability 0.01, values U[−1, 1]: the MLPs
must compute 100 ReLUs with fewer neurons than features.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn

from tunelens.config import Schedule
from tunelens.schedules import lr_scheduler
from tunelens.spd.targets import CiPattern, Log, ToyTarget, cached_training, call_module, freeze, register_target
from tunelens.spd.targets.tms import sparse_features


class ResidMlpTargetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["resid_mlp"] = "resid_mlp"
    n_features: PositiveInt = Field(100, description="Number of sparse input features.")
    d_embed: PositiveInt = Field(1000, description="Residual stream width.")
    d_mlp: PositiveInt = Field(50, description="Neurons per MLP layer.")
    n_layers: PositiveInt = Field(1, description="Residual MLP blocks.")
    feature_prob: float = Field(0.01, gt=0, le=1, description="Probability that a feature is on.")
    train_steps: PositiveInt = Field(1000, description="Target training steps (AdamW, cosine to 0).")
    train_batch_size: PositiveInt = Field(2048, description="Target training batch size.")
    train_lr: PositiveFloat = Field(3e-3, description="Peak target learning rate.")
    train_seed: NonNegativeInt = Field(0, description="Seed of the embedding and training draws.")

    def module_names(self) -> list[str]:
        return [f"layers.{i}.{part}" for i in range(self.n_layers) for part in ("mlp_in", "mlp_out")]


class Block(nn.Module):
    def __init__(self, d_embed: int, d_mlp: int):
        super().__init__()
        self.mlp_in = nn.Linear(d_embed, d_mlp, bias=False)
        self.mlp_out = nn.Linear(d_mlp, d_embed, bias=False)

    def forward(self, resid: Tensor) -> Tensor:
        return resid + self.mlp_out(torch.relu(self.mlp_in(resid)))


class ResidMlp(nn.Module):
    def __init__(self, n_features: int, d_embed: int, d_mlp: int, n_layers: int, embedding: Tensor):
        super().__init__()
        self.register_buffer("W_E", embedding)  # (n_features, d_embed), unit-norm rows, fixed
        self.layers = nn.ModuleList(Block(d_embed, d_mlp) for _ in range(n_layers))

    def forward(self, x: Tensor) -> Tensor:
        resid = x @ self.W_E
        for block in self.layers:
            resid = block(resid)
        return resid @ self.W_E.T


def random_unit_embedding(n_features: int, d_embed: int, generator: torch.Generator) -> Tensor:
    rows = torch.randn(n_features, d_embed, generator=generator)
    return rows / rows.norm(dim=1, keepdim=True)


def train_resid_mlp(config: ResidMlpTargetConfig, log: Log) -> tuple[dict[str, Tensor], dict]:
    generator = torch.Generator().manual_seed(config.train_seed)
    torch.manual_seed(config.train_seed)
    model = ResidMlp(config.n_features, config.d_embed, config.d_mlp, config.n_layers,
                     random_unit_embedding(config.n_features, config.d_embed, generator))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train_lr, weight_decay=0.01)
    scheduler = lr_scheduler(optimizer, Schedule(kind="cosine"), config.train_steps)
    loss = torch.tensor(float("nan"))
    for _ in range(config.train_steps):
        x = sparse_features(config.train_batch_size, config.n_features, config.feature_prob, -1.0, generator)
        loss = (model(x) - (x + torch.relu(x))).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    log(f"target: final loss {loss.item():.3e}")
    return dict(model.state_dict()), {"target_loss": loss.item()}


@register_target("resid_mlp")
def build_resid_mlp_target(config: ResidMlpTargetConfig, device: torch.device, log: Log,
                           weights: dict[str, Tensor] | None = None) -> ToyTarget:
    """The trained (cached) target, or the given weights (e.g. a finished run's target.safetensors)."""
    info: dict = {}
    if weights is None:
        weights, info = cached_training("resid_mlp", config, lambda: train_resid_mlp(config, log), log)
    model = ResidMlp(config.n_features, config.d_embed, config.d_mlp, config.n_layers, weights["W_E"])
    model.load_state_dict(weights)
    model = freeze(model.to(device))
    names = config.module_names()
    # per layer, as the paper and the reference's checks: every mlp_in one subcomponent per feature, every
    # mlp_out one dense block as wide as the layer
    patterns = [pattern for i in range(config.n_layers)
                for pattern in (CiPattern((f"layers.{i}.mlp_in",), "identity", config.n_features),
                                CiPattern((f"layers.{i}.mlp_out",), "dense", config.d_mlp))]

    def sample(batch_size: int) -> Tensor:
        return sparse_features(batch_size, config.n_features, config.feature_prob, -1.0, None, device)

    return ToyTarget(model=model, forward_fn=call_module, module_names=names, sample_batch=sample,
                     output_loss="mse", info=info, one_hot_inputs=0.75 * torch.eye(config.n_features, device=device),
                     ci_patterns=patterns)
