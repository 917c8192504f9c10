"""LoRA adapters through peft: on chosen modules, named, switched on and off, scaled, saved, loaded, merged.

Module names are resolved from the model, not assumed: the default targets are the attention and MLP
projections that Llama, Qwen2, Gemma and OLMo-2 share (q/k/v/o, gate/up/down), and a name that matches no
linear layer is one line listing the names the model does have. Everything here is a thin layer over peft, so
an adapter saved by tunelens is an ordinary peft adapter directory (`PeftModel.from_pretrained`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from tunelens.config import UsageError

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraSettings(BaseModel):
    """LoRA hyper-parameters (a config section any study can embed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: PositiveInt = Field(8, description="Rank of each adapter.")
    alpha: PositiveFloat = Field(16.0, description="Scaling numerator: the update is (alpha / r) B A x.")
    dropout: NonNegativeFloat = Field(0.0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] = Field(default_factory=lambda: list(PROJECTIONS),
                                      description="Leaf names of the linear layers to adapt (e.g. q_proj, up_proj).")
    layers: list[int] | None = Field(None, description="Decoder layer indices to adapt; null = all.")


def linear_leaf_names(model: nn.Module) -> list[str]:
    """Distinct last name parts of the model's linear layers (what peft's target_modules matches)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)})


def resolve_targets(model: nn.Module, wanted: Sequence[str]) -> list[str]:
    available = linear_leaf_names(model)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise UsageError(f"lora.target_modules: no linear layer named '{unknown[0]}' in this model (it has: "
                         f"{', '.join(available)})")
    return list(wanted)


def add_lora(model: nn.Module, settings: LoraSettings, name: str = "default"):
    """Wrap `model` in a peft model with a LoRA adapter `name` (or add `name` to a peft model), and return it.

    Only adapter weights are trainable afterwards. B starts at zero, so the model's outputs are unchanged until
    training moves it."""
    from peft import LoraConfig, PeftModel, get_peft_model

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    lora_config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                             target_modules=resolve_targets(base, settings.target_modules),
                             layers_to_transform=settings.layers, bias="none", task_type="CAUSAL_LM")
    if isinstance(model, PeftModel):
        model.add_adapter(name, lora_config)
        return model
    return get_peft_model(model, lora_config, adapter_name=name)


def lora_layers(model: nn.Module) -> Iterator[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return (module for module in model.modules() if isinstance(module, LoraLayer))


def set_scale(model: nn.Module, name: str, scale: float) -> None:
    """Multiply adapter `name`'s update by `scale` relative to alpha / r (0 ablates it, 1 restores it)."""
    found = False
    for layer in lora_layers(model):
        if name in layer.scaling:
            layer.set_scale(name, scale)
            found = True
    if not found:
        raise UsageError(f"no LoRA adapter named '{name}' in the model")


@contextmanager
def adapters_disabled(model) -> Iterator[None]:
    """The base model's behaviour inside the block (peft's own switch), the adapters back on after it."""
    with model.disable_adapter():
        yield


def save_adapter(model, out_dir: str | Path, base_model_path: str | Path | None = None) -> Path:
    """peft's adapter directory (adapter_config.json + adapter_model.safetensors); `base_model_path` is written
    into the config so `AutoPeftModelForCausalLM.from_pretrained(out_dir)` finds the base."""
    out_dir = Path(out_dir)
    if base_model_path is not None:
        for config in model.peft_config.values():
            config.base_model_name_or_path = str(base_model_path)
    model.save_pretrained(str(out_dir))
    return out_dir


def load_adapter(base_model: nn.Module, adapter_dir: str | Path, name: str = "default", trainable: bool = False):
    """Attach a saved adapter to a loaded base model; a directory that is not an adapter is one clear line."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UsageError(f"{adapter_dir}: not a peft adapter directory (no adapter_config.json)")
    return PeftModel.from_pretrained(base_model, str(adapter_dir), adapter_name=name, is_trainable=trainable)


def merge(model) -> nn.Module:
    """The base model with the active adapters added into its weights (a plain transformers model again)."""
    return model.merge_and_unload()
