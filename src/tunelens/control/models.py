"""Loading the models the study evaluates: "tiny-stories", an alias, a hub id or a directory, optionally with a
LoRA adapter, which must have been trained on that same base model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import torch

from tunelens.config import UsageError
from tunelens.lm.trainer import DTYPES

TINY = "tiny-stories"
Quantize = Literal["4bit", "8bit"] | None


def resolve_source(name: str) -> str:
    """"tiny-stories" is the locally pretrained tiny model (trained on first use); anything else is passed on."""
    from tunelens.lm.loading import TINY_STORIES, resolve_name

    return resolve_name(name) if name == TINY_STORIES else name


def expected_source(name: str) -> str:
    """What `resolve_source` will give, without pretraining anything (for checks before a run)."""
    if name == TINY:
        from tunelens.lm.pretrain import TinyStoriesConfig, cached_model_dir

        return str(cached_model_dir(TinyStoriesConfig()))
    return name


def canonical_base(name_or_path: str) -> str:
    """One name per model, however it was written: an alias becomes its hub id, a directory its real path, and a
    snapshot inside the Hugging Face cache (…/models--Org--Name/snapshots/<rev>) the hub id Org/Name."""
    from tunelens.lm.loading import resolve_name

    try:
        resolved = resolve_name(name_or_path)
    except UsageError:  # a directory that is gone: compare its name as written
        return str(Path(name_or_path).expanduser())
    if not Path(resolved).is_dir():
        return resolved
    real = Path(resolved).resolve()
    if len(real.parts) >= 3 and real.parts[-2] == "snapshots" and real.parts[-3].startswith("models--"):
        return real.parts[-3][len("models--"):].replace("--", "/")
    return str(real)


def check_adapter_base(adapter_dir: str | Path, source: str) -> None:
    """Stop with one line when the adapter names another base model than `source`."""
    config_file = Path(adapter_dir) / "adapter_config.json"
    if not config_file.is_file():
        raise UsageError(f"{adapter_dir}: not a peft adapter directory (no adapter_config.json)")
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if base and canonical_base(base) != canonical_base(source):
        raise UsageError(f"adapter {adapter_dir} was trained on base model {base}, not on {source}; evaluate it "
                         f"with that model")


def load(name: str, dtype: str = "float32", device: torch.device | str = "cpu", quantize: Quantize = None,
         adapter: str | Path | None = None):
    """(model in eval mode, right-padding tokenizer, resolved source)."""
    from tunelens.lm.loading import load_model, load_tokenizer

    source = resolve_source(name)
    if adapter is not None:
        check_adapter_base(adapter, source)
    tokenizer = load_tokenizer(source, padding_side="right")
    model = load_model(source, dtype=DTYPES[dtype], device=device, quantize=quantize, double_quant=True)
    if adapter is not None:
        from tunelens.lm.adapters import load_adapter

        model = load_adapter(model, adapter).eval()
    return model, tokenizer, source


def slug(name: str) -> str:
    """A model name as a file-name part."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"
