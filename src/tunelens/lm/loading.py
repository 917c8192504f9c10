"""Load causal LMs and tokenizers from a local directory, a Hugging Face hub id, or an alias.

A local directory is used as is. Otherwise the hub id is tried from the local cache first (no network wait), then
from the hub unless HF_HUB_OFFLINE is set; when both fail the error says which id was missing and how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

from tunelens.config import UsageError
from tunelens.lm.aliases import MODEL_ALIASES

Quantize = Literal["4bit", "8bit"] | None
PaddingSide = Literal["left", "right"]


def resolve_name(name_or_path: str | Path) -> str:
    """A local directory, else the hub id behind an alias, else the name itself (a hub id)."""
    text = str(name_or_path)
    if Path(text).is_dir():
        return text
    if text in MODEL_ALIASES:
        return MODEL_ALIASES[text].hub_id
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise UsageError(f"model directory not found: {text}")
    return text


def _not_found(name: str, hub_id: str, cause: str) -> UsageError:
    shown = f"{name} ({hub_id})" if name != hub_id else hub_id
    return UsageError(f"model '{shown}' is not available locally and could not be downloaded "
                      f"({cause}); download it with `hf download {hub_id}` (or run once with network "
                      f"access), or pass a local directory that holds it")


def _from_pretrained(loader, name: str, **kwargs):
    source = resolve_name(name)
    if Path(source).is_dir():
        return loader(source, **kwargs)
    snapshot = cached_snapshot(source)
    if snapshot is not None:  # load the cached files as a directory: no network call at all
        return loader(snapshot, **kwargs)
    if hub_offline():
        raise _not_found(name, source, "offline and not in the local cache")
    try:
        return loader(source, **kwargs)
    except OSError as err:
        raise _not_found(name, source, type(err).__name__) from None


def cached_snapshot(hub_id: str) -> str | None:
    """Local directory of a hub model already in the Hugging Face cache, else None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(hub_id, local_files_only=True)
    except LocalEntryNotFoundError:
        return None
    except HFValidationError:
        raise UsageError(f"'{hub_id}' is neither a local directory, an alias (see `tunelens models`) nor a valid "
                         "hub id") from None


def hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or flag.lower() in ("1", "true", "yes", "on")


def load_tokenizer(name_or_path: str | Path, padding_side: PaddingSide):
    """Tokenizer with a pad token (EOS when it has none) and the padding side the caller needs."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, str(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(name_or_path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               quantize: Quantize = None):
    """A causal LM in eval mode on `device`; 4-/8-bit only on CUDA, through bitsandbytes."""
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": dtype}
    if quantize is not None:
        kwargs["quantization_config"] = quantization_config(quantize, torch.device(device))
        kwargs["device_map"] = {"": torch.device(device).index or 0}
    model = _from_pretrained(AutoModelForCausalLM.from_pretrained, str(name_or_path), **kwargs)
    if quantize is None:
        model = model.to(device)
    return model.eval()


def quantization_config(quantize: str, device: torch.device):
    if quantize not in ("4bit", "8bit"):
        raise UsageError(f"quantize must be 4bit, 8bit or None, got '{quantize}'")
    if device.type != "cuda" or not torch.cuda.is_available():
        raise UsageError(f"{quantize} loading needs a CUDA device (bitsandbytes); use quantize=None on {device.type}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError(f"{quantize} loading needs bitsandbytes: uv sync --extra cuda") from None
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)
