"""Dual adapters for gradient routing: a "good" and a "bad" branch added to a frozen module's output.

    y = base(x) + sum over branches b of  delta_b(drop(x)) * scaling_b * scale_b * row_scale_b

A LoRA branch is delta(x) = B A x (A initialised like nn.Linear, B zero, scaling alpha / r); an MLP branch is a
ReLU bottleneck up(relu(down(x))) (up zero, scaling 1) added to a decoder layer's MLP output. Both start as an
exact no-op. `scale_b` is a float for the whole model (0 ablates the branch); `row_scale_b` and the gradient
gate are per-row tensors that exist only while `routed(...)` is active, for one micro-batch:

    labeled bad  -> gradient to the bad branch only (the good branch still runs, its weights out of the gradient;
                    or, with `ablate_good`, the good branch ablated in the row's forward pass)
    labeled good -> gradient to the good branch only, and the bad branch ablated in the row's forward pass
    other rows   -> gradient to both

A gated row's gradient is kept out of the branch's weight gradient (`lm.trainer.gated_linear`), yet still flows
through the branch to the modules that feed it (e.g. a bad branch of up_proj is trained through the frozen good
branch of down_proj), which is exactly what one example's full gradient, masked to the bad parameters, is.
Detaching the branch's output instead would cut that path.
The wrappers are shaped like peft's LoraLayer: they hold `base_layer` without copying it and keep per-branch
state in dicts keyed by branch name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import Tensor, nn

from tunelens.config import UsageError
from tunelens.lm.layers import decoder_layers
from tunelens.lm.trainer import gated_linear, row_parameter_gate
from tunelens.runs import load_tensors, save_tensors, write_json

BRANCHES = ("good", "bad")
ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# per-row routes of a batch
ROUTE_BOTH, ROUTE_BAD, ROUTE_GOOD = 0, 1, 2


class DualAdapterSettings(BaseModel):
    """Where the two branches go and how big they are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["mlp", "lora"] = Field("mlp", description="ReLU bottlenecks on the MLP output, or dual LoRA.")
    good_dim: int = Field(16, ge=0, description="Good branch: bottleneck width or LoRA rank; 0 = no good branch.")
    bad_dim: PositiveInt = Field(16, description="Bad branch: bottleneck width or LoRA rank.")
    alpha: PositiveFloat = Field(64.0, description="LoRA: scaling alpha / rank per branch (unused for mlp).")
    dropout: NonNegativeFloat = Field(0.0, lt=1, description="Dropout on the branches' input (one shared mask).")
    layers: list[int] | None = Field(None, description="Decoder layer indices; null = the last half.")
    targets: list[str] = Field(default_factory=lambda: list(LORA_TARGETS),
                               description="LoRA: linear layers of each decoder layer to wrap, by leaf name.")
    base_layers: list[int] = Field(default_factory=list, description="Decoder layers whose own weights are "
                                   "trained, as good parameters (the fine-tuned variant; usually with good_dim 0).")


# ----------------------------------------------------------------------------------------------- branches


def linear(x: Tensor, layer: nn.Linear, gate: Tensor | None) -> Tensor:
    """`layer(x)`, with the weight gradient gated row by row when `gate` is given."""
    return layer(x) if gate is None else gated_linear(x, layer.weight, layer.bias, gate)


class LoraBranch(nn.Module):
    def __init__(self, d_in: int, d_out: int, rank: int):
        super().__init__()
        self.lora_A = nn.Linear(d_in, rank, bias=False)  # nn.Linear's own init (Kaiming uniform, a = sqrt 5)
        self.lora_B = nn.Linear(rank, d_out, bias=False)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: Float[Tensor, "... d_in"], gate: Tensor | None = None) -> Float[Tensor, "... d_out"]:
        return linear(linear(x, self.lora_A, gate), self.lora_B, gate)

    def delta_weight(self) -> Float[Tensor, "d_out d_in"]:
        return self.lora_B.weight @ self.lora_A.weight


class BottleneckBranch(nn.Module):
    def __init__(self, d_model: int, width: int):
        super().__init__()
        self.down = nn.Linear(d_model, width, bias=False)
        self.up = nn.Linear(width, d_model, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Float[Tensor, "... d_model"], gate: Tensor | None = None) -> Float[Tensor, "... d_model"]:
        return linear(torch.relu(linear(x, self.down, gate)), self.up, gate)


class DualAdapterLayer(nn.Module):
    """A frozen module plus good and bad branches (see the module docstring for the routing)."""

    def __init__(self, base_layer: nn.Module, branches: dict[str, nn.Module], scaling: dict[str, float],
                 dropout: float = 0.0):
        super().__init__()
        self.base_layer = base_layer
        self.branches = nn.ModuleDict(branches)
        self.scaling = dict(scaling)
        self.scale = {name: 1.0 for name in branches}
        self.row_scale: dict[str, Tensor | None] = {name: None for name in branches}
        self.row_gate: dict[str, Tensor | None] = {name: None for name in branches}
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.last_outputs: dict[str, Tensor] = {}  # each branch's last output (orthogonality loss)

    def set_scale(self, name: str, scale: float) -> None:
        self.scale[name] = float(scale)

    def set_rows(self, name: str, row_scale: Tensor | None, row_gate: Tensor | None) -> None:
        self.row_scale[name], self.row_gate[name] = row_scale, row_gate

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        out = self.base_layer(x, *args, **kwargs)
        dropped = self.dropout(x)
        self.last_outputs = {}
        for name, branch in self.branches.items():
            if self.scale[name] == 0:
                continue
            factor = self.scaling[name] * self.scale[name]
            gate = self.row_gate[name]
            if gate is not None and bool((gate == 1).all()):
                gate = None
            # gated rows send no gradient to the branch's parameters, but gradient still flows through the branch
            # to whatever feeds its input
            delta = branch(dropped, gate) * factor
            delta = _row_scaled(delta, self.row_scale[name])
            self.last_outputs[name] = delta
            out = out + delta
        return out


def _rows(values: Tensor, like: Tensor) -> Tensor:
    assert values.shape[0] == like.shape[0], "per-row values must match the batch"
    return values.to(like).view(-1, *([1] * (like.dim() - 1)))


def _row_scaled(delta: Tensor, row_scale: Tensor | None) -> Tensor:
    return delta if row_scale is None else delta * _rows(row_scale, delta)


# ---------------------------------------------------------------------------------------------- placement


def chosen_layers(n_layers: int, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(n_layers // 2, n_layers))
    bad = [i for i in layers if not -n_layers <= i < n_layers]
    if bad:
        raise UsageError(f"adapter layer {bad[0]} is out of range for a model with {n_layers} decoder layers")
    return sorted({i % n_layers for i in layers})


def add_dual_adapters(model: nn.Module, settings: DualAdapterSettings) -> nn.Module:
    """Freeze the model and wrap, in place, the MLP (kind mlp) or the target linear layers (kind lora) of the
    chosen decoder layers. Module names come from the model: an unknown target is an error, not a no-op."""
    for param in model.parameters():
        param.requires_grad_(False)
    stack = decoder_layers(model)
    dims = {"good": settings.good_dim, "bad": settings.bad_dim}
    dims = {name: dim for name, dim in dims.items() if dim > 0}
    for i in chosen_layers(len(stack), settings.layers):
        layer = stack[i]
        if settings.kind == "mlp":
            if not hasattr(layer, "mlp"):
                raise UsageError(f"decoder layer {i} of {type(model).__name__} has no 'mlp' module")
            d_model = _hidden_size(model)
            branches = {name: BottleneckBranch(d_model, dim) for name, dim in dims.items()}
            _attach(layer, "mlp", DualAdapterLayer(layer.mlp, branches, {n: 1.0 for n in dims}, settings.dropout))
            continue
        leaves = {name.rsplit(".", 1)[-1]: name for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
        missing = [t for t in settings.targets if t not in leaves]
        if missing:
            raise UsageError(f"no linear module '{missing[0]}' in decoder layer {i} of {type(model).__name__}; "
                             f"it has {', '.join(sorted(leaves))}")
        for target in settings.targets:
            path = leaves[target]
            base = layer.get_submodule(path)
            branches = {name: LoraBranch(base.in_features, base.out_features, dim) for name, dim in dims.items()}
            scaling = {name: settings.alpha / dim for name, dim in dims.items()}
            parent_path, _, leaf = path.rpartition(".")
            parent = layer.get_submodule(parent_path) if parent_path else layer
            _attach(parent, leaf, DualAdapterLayer(base, branches, scaling, settings.dropout))
    device = next(model.parameters()).device
    dtype = next(p for p in model.parameters()).dtype
    for adapter in adapter_layers(model):
        adapter.branches.to(device=device, dtype=dtype)
    for i in chosen_layers(len(stack), settings.base_layers) if settings.base_layers else []:
        for name, param in stack[i].named_parameters():
            if ".branches." not in name:
                param.requires_grad_(True)
    return model


def trained_base_modules(model: nn.Module) -> list[nn.Module]:
    """Modules outside the branches that own trainable parameters (the fine-tuned variant's good weights)."""
    branch_ids = {id(p) for layer in adapter_layers(model) for p in layer.branches.parameters()}
    return [m for m in model.modules()
            if any(p.requires_grad and id(p) not in branch_ids for p in m.parameters(recurse=False))]


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "hidden_size", None)
    if size is None:
        raise UsageError(f"{type(model).__name__} has no config.hidden_size")
    return int(size)


def _attach(parent: nn.Module, name: str, wrapper: DualAdapterLayer) -> None:
    assert not isinstance(getattr(parent, name), DualAdapterLayer), f"{name} is already wrapped"
    setattr(parent, name, wrapper)


def adapter_layers(model: nn.Module) -> Iterator[DualAdapterLayer]:
    return (m for m in model.modules() if isinstance(m, DualAdapterLayer))


def branch_params(model: nn.Module, branch: str) -> list[nn.Parameter]:
    return [p for layer in adapter_layers(model) if branch in layer.branches
            for p in layer.branches[branch].parameters()]


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters by optimiser: every branch's own, and any trainable base weight counts as good
    (the fine-tuned variant trains the last layers' own weights in place of a good adapter)."""
    groups = {name: branch_params(model, name) for name in BRANCHES}
    adapter_ids = {id(p) for group in groups.values() for p in group}
    groups["good"] += [p for p in model.parameters() if p.requires_grad and id(p) not in adapter_ids]
    return {name: params for name, params in groups.items() if params}


def set_scales(model: nn.Module, good: float, bad: float) -> None:
    for layer in adapter_layers(model):
        for name, scale in (("good", good), ("bad", bad)):
            if name in layer.branches:
                layer.set_scale(name, scale)


@contextmanager
def scales(model: nn.Module, good: float, bad: float) -> Iterator[None]:
    layers = list(adapter_layers(model))
    saved = [dict(layer.scale) for layer in layers]
    set_scales(model, good, bad)
    try:
        yield
    finally:
        for layer, scale in zip(layers, saved):
            layer.scale = scale


def route_gates(routes: Tensor, ablate_good: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
    """Per branch: (forward row scale, gradient gate) for rows routed ROUTE_BOTH / ROUTE_BAD / ROUTE_GOOD;
    `ablate_good`: labeled-bad rows run without the good branch, as labeled-good rows run without the bad one."""
    good_gate = (routes != ROUTE_BAD).float()
    bad_on = (routes != ROUTE_GOOD).float()
    good_scale = good_gate if ablate_good else torch.ones(len(routes))
    return {"good": (good_scale, good_gate), "bad": (bad_on, bad_on)}


@contextmanager
def routed(model: nn.Module, routes: Tensor, ablate_good: bool = False) -> Iterator[None]:
    """Per-row routing for the micro-batch run inside the block (rows in batch order)."""
    gates = {name: (scale.to(routes.device), gate.to(routes.device))
             for name, (scale, gate) in route_gates(routes.cpu(), ablate_good).items()}
    layers = list(adapter_layers(model))
    for layer in layers:
        for name in layer.branches:
            layer.set_rows(name, *gates[name])
    try:
        with row_parameter_gate(trained_base_modules(model), gates["good"][1]):  # trained base weights are good
            yield
    finally:
        for layer in layers:
            for name in layer.branches:
                layer.set_rows(name, None, None)


def groups_to_step(routes: Sequence[int]) -> set[str]:
    """The optimisers that some row of the global batch may update: one labeled-bad example alone steps only the
    bad optimiser, as the one-example-per-step original does."""
    groups = set()
    if any(r != ROUTE_BAD for r in routes):
        groups.add("good")
    if any(r != ROUTE_GOOD for r in routes):
        groups.add("bad")
    return groups


# ------------------------------------------------------------------------------------------- orthogonality


def orthogonality_loss(model: nn.Module) -> Float[Tensor, "batch"]:
    """Per row: mean over adapted modules and positions of the squared cosine between the two branches' last
    outputs (0 when either branch is off)."""
    terms = []
    for layer in adapter_layers(model):
        outs = layer.last_outputs
        if "good" in outs and "bad" in outs:
            cos = nn.functional.cosine_similarity(outs["good"], outs["bad"], dim=-1, eps=1e-8)
            terms.append(cos.pow(2).flatten(1).mean(-1))
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).mean(0)


# -------------------------------------------------------------------------------------------- save / load


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """The branches and any trained base weight (the fine-tuned variant's good parameters)."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()
            if ".branches." in name or p.requires_grad}


def save_adapters(model: nn.Module, settings: DualAdapterSettings, out_dir: str | Path,
                  base_model: str | None = None) -> Path:
    """The branches' weights alone (safetensors) and the settings that place them (json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / ADAPTER_FILE, adapter_state(model))
    write_json(out / ADAPTER_CONFIG, {"settings": settings.model_dump(mode="json"), "base_model": base_model})
    return out


def read_adapter_config(adapter_dir: str | Path) -> tuple[DualAdapterSettings, str | None]:
    folder = Path(adapter_dir)
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_FILE).is_file():
        raise UsageError(f"{folder}: no dual adapters here ({ADAPTER_CONFIG} and {ADAPTER_FILE})")
    saved = json.loads((folder / ADAPTER_CONFIG).read_text())
    return DualAdapterSettings(**saved["settings"]), saved.get("base_model")


def load_adapters(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Wrap a fresh base model as the saved adapters were placed, then load their weights."""
    settings, _ = read_adapter_config(adapter_dir)
    add_dual_adapters(model, settings)
    saved = load_tensors(Path(adapter_dir) / ADAPTER_FILE)
    params = dict(model.named_parameters())
    if set(saved) != set(adapter_state(model)):
        raise UsageError(f"{adapter_dir}: the saved adapters do not fit this model")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    return model


def n_params(params: Sequence[nn.Parameter]) -> int:
    return sum(math.prod(p.shape) for p in params)
