"""Load causal LMs and tokenizers from a local directory, a Hugging Face hub id, or an alias (`tunelens models`).

A local directory is used as is. A hub id is loaded from the Hugging Face cache when it is there, as a directory,
so that nothing touches the network (transformers' own `local_files_only` still probes the hub for adapters).
Otherwise, unless HF_HUB_OFFLINE is set, one quick request checks that the hub can serve it before the loaders'
slow retries start. Every failure to find a model is one line naming the id and how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from tunelens.config import UsageError
from tunelens.lm.aliases import MODEL_ALIASES

Quantize = Literal["4bit", "8bit"] | None
PaddingSide = Literal["left", "right"]


def load_tokenizer(name_or_path: str | Path, padding_side: PaddingSide):
    """Tokenizer with a pad token (EOS when it has none) and the padding side this caller needs.

    The side is required because it differs by use: left for generation, right for training and scoring.
    """
    from transformers import AutoTokenizer

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, name_or_path, TOKENIZER_FILES)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def quiet_progress_bars() -> None:
    """transformers' and the hub's progress bars only on a terminal: elsewhere they fill logs with bars."""
    from transformers.utils import logging as hf_logging

    from tunelens.runs import is_interactive

    if not is_interactive():
        hf_logging.disable_progress_bar()


def load_model(name_or_path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               quantize: Quantize = None, double_quant: bool = False):
    """A causal LM in eval mode on `device`; 4-/8-bit weights only on CUDA, through bitsandbytes (`double_quant`:
    nf4 with its quantisation constants quantised too, as QLoRA and the output-control study load models)."""
    from transformers import AutoModelForCausalLM

    quiet_progress_bars()

    device = torch.device(device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantize is not None:
        kwargs["quantization_config"] = quantization_config(quantize, device, double_quant)
        kwargs["device_map"] = {"": device.index or 0}
    model = _from_pretrained(AutoModelForCausalLM.from_pretrained, name_or_path, **kwargs)
    if quantize is None:
        model = model.to(device)
    return model.eval()


def context_length(model) -> int | None:
    """The positions the model was built for (`max_position_embeddings`), where its config says."""
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def quantization_config(quantize: str, device: torch.device, double_quant: bool = False):
    if quantize not in ("4bit", "8bit"):
        raise UsageError(f"quantize must be 4bit, 8bit or None, got '{quantize}'")
    if device.type != "cuda" or not torch.cuda.is_available():
        raise UsageError(f"{quantize} loading needs a CUDA device (bitsandbytes); load with quantize=None "
                         f"on {device.type}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError(f"{quantize} loading needs bitsandbytes: uv sync --extra cuda") from None
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                                  bnb_4bit_use_double_quant=double_quant)
    return BitsAndBytesConfig(load_in_8bit=True)


# ------------------------------------------------------------------------------------------------ resolution


TINY_STORIES = "tiny-stories"  # the toolkit's own tiny base model, pretrained locally on first use
TINY_NAMES = (TINY_STORIES, "tiny-stories-mixedcase", "tiny-stories-copy")  # with variants: `lm.pretrain.TINY_MODELS`
TINY_CODE = "tiny-code"  # the MBPP study's tiny code model (`routing.code_model`), pretrained locally on first use


def resolve_name(name_or_path: str | Path) -> str:
    """A local directory, else a tiny model's cached directory ("tiny-stories" and its variants, "tiny-code";
    pretrained on first use), else the hub id (or directory) behind an alias, else the name itself as a hub id."""
    text = str(name_or_path)
    if text in TINY_NAMES and not Path(text).is_dir():
        from tunelens.lm.pretrain import tiny_model_config, tiny_story_model

        return str(tiny_story_model(tiny_model_config(text)))
    if text == TINY_CODE and not Path(text).is_dir():
        from tunelens.routing.code_model import tiny_code_model

        return str(tiny_code_model())
    expanded = os.path.expanduser(text)
    if Path(expanded).is_dir():
        return expanded
    if text in MODEL_ALIASES:
        return MODEL_ALIASES[text].hub_id
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise UsageError(f"model directory not found: {text}")
    return text


MODEL_FILES = ("config.json",)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def _from_pretrained(loader: Callable[..., Any], name: str | Path, markers: tuple[str, ...] = MODEL_FILES,
                     **kwargs: Any) -> Any:
    name = str(name)
    source = resolve_name(name)
    if Path(source).is_dir():
        # without these files transformers ends in a tokenizer-conversion message that names neither the problem
        # nor the directory
        if not any((Path(source) / marker).is_file() for marker in markers):
            raise UsageError(f"{name} is a directory but not a Hugging Face model (no {' or '.join(markers)}); pass "
                             "a directory that save_pretrained wrote, an alias or a hub id")
        return loader(source, **kwargs)
    snapshot = cached_snapshot(source)
    if snapshot is not None:
        try:
            return loader(snapshot, **kwargs)
        except OSError:  # partly cached, e.g. the tokenizer files but not the weights: the hub has the rest
            if hub_offline():
                raise _not_found(name, source, "offline and only partly in the local cache") from None
    elif hub_offline():
        raise _not_found(name, source, "offline and not in the local cache")
    problem = hub_problem(source)
    if problem is not None:
        raise _not_found(name, source, problem)
    try:
        return loader(source, **kwargs)
    except OSError as err:
        raise _not_found(name, source, str(err).strip().splitlines()[0]) from None


def _not_found(name: str, hub_id: str, cause: str) -> UsageError:
    shown = f"{name} ({hub_id})" if name != hub_id else hub_id
    return UsageError(f"model '{shown}' is not available locally and could not be downloaded ({cause}); "
                      f"download it with `hf download {hub_id}` (or `huggingface-cli download {hub_id}`, or run "
                      f"once with network access), or pass a local directory that holds it")


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


def hub_problem(hub_id: str) -> str | None:
    """Why the hub cannot serve `hub_id` right now, or None: one request that fails at once when offline."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HTTPError, RepositoryNotFoundError

    try:
        HfApi().model_info(hub_id, timeout=10)
    except RepositoryNotFoundError:
        return "no such model on the hub, or it is private: check the id, or log in with `hf auth login`"
    except (HTTPError, OSError) as err:
        return f"cannot reach the hub: {type(err).__name__}"
    return None


def hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or flag.lower() in ("1", "true", "yes", "on")
