"""The tiny code model of the MBPP study: the tiny Llama trained on Python source every machine has offline.

Training text: the running interpreter's standard library (found with `sysconfig`, PSF licence; `site-packages`, test
directories and the generated codec tables of `encodings` left out), files taken in the order of a hash of their
path (a spread over the whole library) up to `max_chars` characters, plus the MBPP training pool's reference
solutions without comments; a share of the standard-library files (by another hash of their path) is held out for
the loss. The run is the registered experiment `tiny-code` (`tunelens pretrain tiny-code` puts it in the cache,
and the name "tiny-code" loads it like a model id); the cache key covers the config and the Python version, whose
standard library it read.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt

from tunelens.cache import cached, entry_dir
from tunelens.config import UsageError, config_to_dict
from tunelens.lm import pretrain as pretrain_module
from tunelens.lm.pretrain import MODEL_DIR, TinyLmConfig, pretrain_on
from tunelens.runs import Run

TINY_CODE = "tiny-code"
SKIPPED_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__", "encodings"}


class TinyCodeConfig(TinyLmConfig):
    """Tiny base LM on Python source (the standard library and MBPP's training solutions)."""

    max_chars: PositiveInt = Field(6_000_000, description="Standard-library characters to read (files in the order "
                                   "of a hash of their path).")
    held_out_percent: float = Field(5.0, gt=0, lt=100, description="Share of standard-library files held out.")
    include_mbpp: bool = Field(True, description="Add the MBPP training pool's reference solutions.")


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    """The standard library's .py files without site-packages, test directories and codec tables, in the order of
    a hash of their relative path (so that any prefix is a spread over the whole library)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = [path for path in root.rglob("*.py") if not SKIPPED_DIRS & set(path.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda path: _hash(f"order:{path.relative_to(root)}"))


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def is_held_out(relative_path: str, percent: float) -> bool:
    return _hash(f"held-out:{relative_path}") % 10_000 < percent * 100


def code_texts(config: TinyCodeConfig, root: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    train, held_out, total = [], [], 0
    for path in stdlib_files(root):
        if total >= config.max_chars:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        total += len(text)
        (held_out if is_held_out(str(path.relative_to(root)), config.held_out_percent) else train).append(text)
    if not held_out or not train:
        raise UsageError(f"{len(train)} training and {len(held_out)} held-out standard-library files under {root} "
                         f"within max_chars={config.max_chars}: raise max_chars or held_out_percent")
    if config.include_mbpp:
        from tunelens.data import MBPP
        from tunelens.routing.mbpp_check import read_records
        from tunelens.routing.mbpp_data import split_problems
        from tunelens.routing.mbpp_hacks import strip_comments

        pool, _ = split_problems(read_records(MBPP))
        train += [strip_comments(record.code) for record in pool]
    return train, held_out


def run(config: TinyCodeConfig, run: Run) -> dict[str, Any]:
    """The registered experiment `tiny-code`: the model goes to DIR/model, the run files beside it."""
    train, held_out = code_texts(config)
    run.log(f"{len(train)} training texts ({sum(map(len, train)):,} characters), {len(held_out)} held out")
    prompts = ["def add(a, b):\n", "import os\n\n\ndef ", "class Stack:\n    def __init__(self):\n"][: config.n_samples]
    summary = pretrain_on(config, train, held_out, prompts, run.dir / MODEL_DIR, run.log, run,
                          {"python": f"{sys.version_info.major}.{sys.version_info.minor}"})
    run.log(f"held-out loss {summary['eval_loss']:.3f} (from {summary['eval_loss_initial']:.3f}), on repeated "
            f"halves {summary['eval_repeat_loss']:.3f}, "
            f"{summary['n_params'] / 1e6:.2f}M parameters")
    return {k: v for k, v in summary.items() if k != "config"}


def cache_key(config: TinyCodeConfig) -> dict[str, Any]:
    settings = {k: v for k, v in config_to_dict(config).items() if k != "device"}
    return {"config": settings, "python": list(sys.version_info[:2])}


def cached_model_dir(config: TinyCodeConfig) -> Path:
    return entry_dir(TINY_CODE, cache_key(config)) / MODEL_DIR


def tiny_code_model(config: TinyCodeConfig | None = None, quiet: bool = False) -> Path:
    """Directory of the tiny code model for `config` (the registered defaults when None), pretrained if not cached."""
    from tunelens.registry import get_experiment
    from tunelens.runs import run_experiment

    experiment = get_experiment(TINY_CODE)
    config = config or experiment.load_config()

    def build(folder: Path) -> None:
        run_experiment(experiment, config, folder, quiet=quiet)

    return cached(TINY_CODE, cache_key(config), build) / MODEL_DIR


is_pretrained = pretrain_module.is_pretrained  # the same test as the story model's cache
