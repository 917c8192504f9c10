"""Pretrain the tiny base language model on the synthetic story corpus.

Pretraining is the registered experiment `tiny-stories` (standard run directory, the model in `DIR/model/`), and
uses the shared training loop. `tiny_story_model()` is how studies get "the tiny base model": the `model/`
directory (an ordinary Hugging Face model with its tokenizer and `pretrain_summary.json`) of a run cached under
`<cache>/tiny-stories/<hash>` (`tunelens.cache`), where the hash covers the config and the corpus version; it is
pretrained on first use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Int
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch import Tensor

from tunelens.cache import cached, entry_dir, is_cached
from tunelens.config import Schedule, TunelensConfig, config_to_dict
from tunelens.lm.corpus import CORPUS_VERSION
from tunelens.lm.examples import TokenizedExample
from tunelens.lm.trainer import TrainSettings, mean_loss, train
from tunelens.runs import Run, resolve_device, write_json

SUMMARY_FILE = "pretrain_summary.json"  # beside the weights, so a copied model directory keeps its record
MODEL_DIR = "model"


class TinyLmConfig(TunelensConfig):
    """The model and optimisation of a tiny base LM (Llama or OLMo-2 architecture, own BPE tokenizer)."""

    # model
    architecture: Literal["llama", "olmo2"] = Field("llama", description="transformers architecture.")
    vocab_size: PositiveInt = Field(2048, description="BPE vocabulary size (special tokens included).")
    d_model: PositiveInt = Field(128, description="Hidden width.")
    n_layers: PositiveInt = Field(4, description="Transformer blocks.")
    n_heads: PositiveInt = Field(4, description="Attention heads (must divide d_model).")
    d_mlp: PositiveInt = Field(384, description="MLP width.")
    tie_embeddings: bool = Field(True, description="Share the input and output embedding matrix.")
    seq_len: PositiveInt = Field(128, description="Tokens per training window (also the model's max length).")
    # optimisation
    steps: PositiveInt = Field(1000, description="Optimisation steps.")
    batch_size: PositiveInt = Field(32, description="Windows per step.")
    lr: PositiveFloat = Field(6e-3, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    lr_schedule: Schedule = Field(Schedule(kind="cosine", warmup_frac=0.05, final_frac=0.1),
                                  description="Learning-rate schedule over `steps`.")
    repeat_frac: float = Field(0.0, ge=0, le=1, description="Share of training windows whose second half repeats "
                               "their first (copying data, from which the model learns to copy from its context: "
                               "induction heads).")
    # summary
    n_samples: PositiveInt = Field(3, description="Continuations sampled for the summary.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyLmConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        return self


class TinyStoriesConfig(TinyLmConfig):
    """Tiny base LM on synthetic stories; the defaults train in about ten minutes on a 2-core CPU (1.1M parameters)."""

    n_train_stories: PositiveInt = Field(20_000, description="Training stories (tokenizer and LM).")
    n_eval_stories: PositiveInt = Field(200, description="Held-out stories for the eval loss.")
    corpus_seed: NonNegativeInt = Field(0, description="Seed of the story corpus.")
    caps_word_frac: float = Field(0.0, ge=0, le=1, description="Share of the training stories' words written in "
                                  "capitals (tokenizer and model), so that capitals are known but whole stories "
                                  "in capitals are not.")


# ----------------------------------------------------------------------------------------------- pretrain


def train_settings(config: TinyLmConfig) -> TrainSettings:
    return TrainSettings(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                         weight_decay=config.weight_decay, betas=(0.9, 0.95), lr_schedule=config.lr_schedule,
                         max_grad_norm=1.0, eval_batch_size=64, checkpoint_every=0, log_every=10)


def windows_as_rows(windows: Int[Tensor, "window seq"]) -> list[TokenizedExample]:
    """Fixed-length windows of the story stream as training rows with every token in the loss."""
    return [TokenizedExample(w.tolist(), [1] * len(w), i, 0) for i, w in enumerate(windows)]


def repeat_halves(windows: Int[Tensor, "window seq"], frac: float, seed: int) -> Int[Tensor, "window seq"]:
    """A copy of `windows` in which int(frac * n) windows, chosen with a seeded generator, have their second half
    replaced by their first (for an odd length the last token stays)."""
    n, length = windows.shape
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: int(frac * n)]
    out = windows.clone()
    half = length // 2
    out[chosen, half:2 * half] = out[chosen, :half]
    return out


def repeat_loss(model, windows: Int[Tensor, "window seq"], pad_id: int, device) -> float:
    """Mean loss on the second half of windows whose second half repeats their first: low only for a model that
    copies from its context (the in-context copying, or induction, measure)."""
    half = windows.shape[1] // 2
    repeated = torch.cat([windows[:, :half], windows[:, :half]], dim=1)
    rows = [TokenizedExample(w.tolist(), [0] * half + [1] * half, i, 0) for i, w in enumerate(repeated)]
    return mean_loss(model, rows, pad_id, device=device)


def pretrain(config: TinyStoriesConfig, out_dir: str | Path, log: Callable[[str], None] = print,
             run: Run | None = None) -> dict[str, Any]:
    """Train tokenizer and model on the story corpus with the shared loop, save both to `out_dir` as one HF
    directory, return the summary (also saved there)."""
    from tunelens.lm.corpus import story_splits, uppercase_words

    train_stories, eval_stories = story_splits(config.n_train_stories, config.n_eval_stories, config.corpus_seed)
    train_stories = [uppercase_words(story, config.caps_word_frac, config.corpus_seed, i)
                     for i, story in enumerate(train_stories)]
    prompts = [" ".join(story.split()[:8]) for story in eval_stories[: config.n_samples]]
    return pretrain_on(config, train_stories, eval_stories, prompts, out_dir, log, run,
                       {"corpus_version": CORPUS_VERSION})


def pretrain_on(config: TinyLmConfig, train_texts: Sequence[str], eval_texts: Sequence[str], prompts: Sequence[str],
                out_dir: str | Path, log: Callable[[str], None] = print, run: Run | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A BPE tokenizer and a tiny model trained on `train_texts` (windows of the joined stream), the held-out loss
    on `eval_texts`, continuations of `prompts`; both saved to `out_dir`, the summary returned and saved there."""
    from tunelens.lm.batching import token_windows
    from tunelens.lm.generation import sample
    from tunelens.lm.loading import quiet_progress_bars
    from tunelens.lm.tiny import tiny_causal_lm
    from tunelens.lm.tokenizer import train_bpe_tokenizer

    quiet_progress_bars()
    start = time.perf_counter()
    device = resolve_device(config.device)
    tokenizer = train_bpe_tokenizer(train_texts, config.vocab_size)
    train_windows = token_windows(train_texts, tokenizer, config.seq_len)
    eval_windows = token_windows(eval_texts, tokenizer, config.seq_len)
    train_rows = windows_as_rows(repeat_halves(train_windows, config.repeat_frac, config.seed)
                                 if config.repeat_frac else train_windows)
    eval_rows = windows_as_rows(eval_windows)
    # same size as the held-out set, so the two losses compare; never a repeated window
    train_probe = windows_as_rows(train_windows[: len(eval_rows)])
    with torch.random.fork_rng(devices=[]):  # seeded init and draws that leave a calling study's stream alone
        torch.manual_seed(config.seed)
        model = tiny_causal_lm(config.architecture, len(tokenizer), config.d_model, config.n_layers, config.n_heads,
                               config.d_mlp, config.seq_len, config.tie_embeddings, tokenizer.bos_token_id,
                               tokenizer.eos_token_id, tokenizer.pad_token_id).to(device)
        n_params = sum(p.numel() for p in model.parameters())
        log(f"{n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, {len(train_rows)} training windows of "
            f"{config.seq_len} tokens, {config.steps} steps of {config.batch_size} on {device}")
        pad_id = tokenizer.pad_token_id
        eval_loss_initial = mean_loss(model, eval_rows, pad_id, device=device)
        result = train(model, train_rows, train_settings(config), pad_id=pad_id, seed=config.seed, device=device,
                       run=run)
        continuations = sample(model, tokenizer, list(prompts), max_new_tokens=80, temperature=0.8, top_p=0.95,
                               generator=torch.Generator().manual_seed(config.seed))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    summary = {"n_params": n_params, "vocab_size": len(tokenizer), "steps": config.steps,
               "n_train_tokens_seen": config.steps * config.batch_size * config.seq_len,
               "n_train_windows": len(train_rows), "train_loss": mean_loss(model, train_probe, pad_id, device=device),
               "eval_loss": mean_loss(model, eval_rows, pad_id, device=device),
               "eval_loss_initial": eval_loss_initial,
               "eval_repeat_loss": repeat_loss(model, eval_windows, pad_id, device),
               "train_seconds": round(result.train_seconds, 1),
               "tokens_per_second": round(result.tokens_per_second), "seconds": round(time.perf_counter() - start, 1),
               "samples": [{"prompt": p, "continuation": c} for p, c in zip(prompts, continuations)],
               **(extra or {}), "config": config_to_dict(config)}
    write_json(Path(out_dir) / SUMMARY_FILE, summary)
    return summary


def run(config: TinyStoriesConfig, run: Run) -> dict[str, Any]:
    """The registered experiment `tiny-stories`: the model goes to DIR/model, the run files beside it."""
    summary = pretrain(config, run.dir / MODEL_DIR, run.log, run)
    run.log(f"held-out loss {summary['eval_loss']:.3f} (from {summary['eval_loss_initial']:.3f}), "
            f"{summary['n_params'] / 1e6:.2f}M parameters")
    return {k: v for k, v in summary.items() if k != "config"}


# -------------------------------------------------------------------------------------------------- cache


def cache_key(config: TinyStoriesConfig) -> dict[str, Any]:
    """The config without where it runs, and the corpus version. Fields added after the first release are left
    out at their default, so models cached before them keep their key."""
    settings = {k: v for k, v in config_to_dict(config).items()
                if k != "device" and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    return {"config": settings, "corpus_version": CORPUS_VERSION}


LATER_FIELDS: dict[str, Any] = {"caps_word_frac": 0.0, "repeat_frac": 0.0}

# The built-in tiny models by name: the defaults, and variants that differ in a few fields. Any of these names
# loads like a model id (`lm.loading.resolve_name`) and is pretrained on first use.
TINY_MODELS: dict[str, dict[str, Any]] = {
    "tiny-stories": {},
    # 5 % of words in capitals: whole stories in capitals are new, capital letters are not (the routing study)
    "tiny-stories-mixedcase": {"caps_word_frac": 0.05},
    # half the windows repeat their first half: the model learns to copy words from its context (output control)
    "tiny-stories-copy": {"repeat_frac": 0.5},
}


def tiny_model_config(name: str) -> TinyStoriesConfig:
    return TinyStoriesConfig(**TINY_MODELS[name])


def cached_model_dir(config: TinyStoriesConfig) -> Path:
    """The model directory inside the cached run of this config."""
    return entry_dir("tiny-stories", cache_key(config)) / MODEL_DIR


def tiny_story_model(config: TinyStoriesConfig | None = None, quiet: bool = False) -> Path:
    """Directory of the tiny base model for `config` (defaults when None), pretrained first if not cached."""
    from tunelens.registry import get_experiment
    from tunelens.runs import run_experiment

    config = config or TinyStoriesConfig()

    def build(folder: Path) -> None:
        run_experiment(get_experiment("tiny-stories"), config, folder, quiet=quiet)

    return cached("tiny-stories", cache_key(config), build) / MODEL_DIR


def is_pretrained(model_dir: Path) -> bool:
    return is_cached(model_dir.parent) and (model_dir / SUMMARY_FILE).is_file()


def read_summary(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / SUMMARY_FILE).read_text())


__all__ = ["TINY_MODELS", "TinyLmConfig", "TinyStoriesConfig", "cached_model_dir", "pretrain", "pretrain_on",
           "read_summary", "run", "tiny_model_config", "tiny_story_model"]
