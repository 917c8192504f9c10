"""Pretrain the tiny base language model on the synthetic story corpus.

`tiny_story_model()` is how studies get "the tiny base model": the directory of an ordinary Hugging Face model
(model + tokenizer + `pretrain_summary.json`), cached under `<cache>/tiny-stories/<hash>` (`tunelens.cache`) where the hash
covers the config and the corpus version, and pretrained on first use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Int
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch import Tensor

from tunelens.config import Schedule, TunelensConfig, config_hash, config_to_dict
from tunelens.schedules import schedule_value
from tunelens.lm.corpus import CORPUS_VERSION
from tunelens.cache import cached, entry_dir, is_cached
from tunelens.runs import Run, write_json

SUMMARY_FILE = "pretrain_summary.json"


class TinyStoriesConfig(TunelensConfig):
    """Tiny base LM on synthetic stories; the defaults train in about ten minutes on a 2-core CPU (1.1M parameters)."""

    # model
    architecture: Literal["llama", "olmo2"] = Field("llama", description="transformers architecture.")
    vocab_size: PositiveInt = Field(2048, description="BPE vocabulary size (special tokens included).")
    d_model: PositiveInt = Field(128, description="Hidden width.")
    n_layers: PositiveInt = Field(4, description="Transformer blocks.")
    n_heads: PositiveInt = Field(4, description="Attention heads (must divide d_model).")
    d_mlp: PositiveInt = Field(384, description="MLP width.")
    tie_embeddings: bool = Field(True, description="Share the input and output embedding matrix.")
    # data
    seq_len: PositiveInt = Field(128, description="Tokens per training window (also the model's max length).")
    n_train_stories: PositiveInt = Field(20_000, description="Training stories (tokenizer and LM).")
    n_eval_stories: PositiveInt = Field(200, description="Held-out stories for the eval loss.")
    corpus_seed: NonNegativeInt = Field(0, description="Seed of the story corpus.")
    # optimisation
    steps: PositiveInt = Field(1000, description="Optimisation steps.")
    batch_size: PositiveInt = Field(32, description="Windows per step.")
    lr: PositiveFloat = Field(6e-3, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    lr_schedule: Schedule = Field(Schedule(kind="cosine", warmup_frac=0.05, final_frac=0.1),
                                  description="Learning-rate schedule over `steps`.")
    # summary
    n_samples: PositiveInt = Field(3, description="Continuations sampled for the summary.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyStoriesConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        return self


# ------------------------------------------------------------------------------------------------- steps


@torch.no_grad()
def mean_loss(model, data: Int[Tensor, "window seq"], batch_size: int = 64) -> float:
    """Mean next-token loss over all windows (every window has the same number of targets)."""
    total = sum(model(input_ids=chunk, labels=chunk).loss.item() * len(chunk) for chunk in data.split(batch_size))
    return total / len(data)


def train_step(model, optimizer: torch.optim.Optimizer, batch: Int[Tensor, "batch seq"], lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = model(input_ids=batch, labels=batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


# ----------------------------------------------------------------------------------------------- pretrain

ProgressFn = Callable[[int, float], None]


def pretrain(config: TinyStoriesConfig, out_dir: str | Path, log: Callable[[str], None] = print,
             progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train tokenizer and model, save both to `out_dir` as one HF directory, return the summary (also saved)."""
    from tunelens.lm.batching import token_windows
    from tunelens.lm.corpus import story_splits
    from tunelens.lm.generation import sample
    from tunelens.lm.tiny import tiny_causal_lm
    from tunelens.lm.tokenizer import train_bpe_tokenizer

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    train_stories, eval_stories = story_splits(config.n_train_stories, config.n_eval_stories, config.corpus_seed)
    tokenizer = train_bpe_tokenizer(train_stories, config.vocab_size)
    train_data = token_windows(train_stories, tokenizer, config.seq_len)
    eval_data = token_windows(eval_stories, tokenizer, config.seq_len)
    train_probe = train_data[: len(eval_data)]  # same size as the held-out set, so the two losses compare
    with torch.random.fork_rng(devices=[]):  # seeded init that leaves a calling study's random stream alone
        torch.manual_seed(config.seed)
        model = tiny_causal_lm(config.architecture, len(tokenizer), config.d_model, config.n_layers, config.n_heads,
                               config.d_mlp, config.seq_len, config.tie_embeddings, tokenizer.bos_token_id,
                               tokenizer.eos_token_id, tokenizer.pad_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, {len(train_data)} training windows of "
        f"{config.seq_len} tokens, {config.steps} steps of {config.batch_size}")
    eval_loss_initial = mean_loss(model.eval(), eval_data)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    model.train()
    train_start = time.perf_counter()
    for step in range(config.steps):
        batch = train_data[torch.randint(0, len(train_data), (config.batch_size,), generator=generator)]
        loss = train_step(model, optimizer, batch, schedule_value(config.lr_schedule, config.lr, step, config.steps))
        if progress is not None:
            progress(step, loss)
    train_seconds = time.perf_counter() - train_start
    model.eval()
    prompts = [" ".join(story.split()[:8]) for story in eval_stories[: config.n_samples]]
    continuations = sample(model, tokenizer, prompts, max_new_tokens=80, temperature=0.8, top_p=0.95,
                           generator=generator)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    summary = {"n_params": n_params, "vocab_size": len(tokenizer), "steps": config.steps,
               "n_train_tokens_seen": config.steps * config.batch_size * config.seq_len,
               "n_train_windows": len(train_data), "train_loss": mean_loss(model, train_probe),
               "eval_loss": mean_loss(model, eval_data), "eval_loss_initial": eval_loss_initial,
               "train_seconds": round(train_seconds, 1), "seconds": round(time.perf_counter() - start, 1),
               "samples": [{"prompt": p, "continuation": c} for p, c in zip(prompts, continuations)],
               "corpus_version": CORPUS_VERSION, "config": config_to_dict(config)}
    write_json(Path(out_dir) / SUMMARY_FILE, summary)  # last: its presence marks a finished model
    return summary


def pretrain_with_progress(config: TinyStoriesConfig, out_dir: Path, quiet: bool = False) -> dict[str, Any]:
    """`pretrain` inside a Run: progress bar on a terminal; log.txt (with the traceback of a failure) and
    metrics.jsonl (loss every 10 steps) beside the model."""
    run = Run(out_dir, "tiny-stories", quiet=quiet)
    try:
        with run.progress(config.steps, "pretraining") as bar:
            def report(step: int, loss: float) -> None:
                bar.update(status=f"loss {loss:.3f}")
                if step % 10 == 0 or step == config.steps - 1:
                    run.log_metrics(step, {"train/loss": loss})

            summary = pretrain(config, out_dir, run.log, report)
    except BaseException:
        run.logger.exception("pretraining failed")
        raise
    finally:
        run.close()
    figures = out_dir / "figures"  # made by Run; a model directory has none
    if not any(figures.iterdir()):
        figures.rmdir()
    return summary


# -------------------------------------------------------------------------------------------------- cache


def cache_key(config: TinyStoriesConfig) -> dict[str, Any]:
    return {"config": config_to_dict(config), "corpus_version": CORPUS_VERSION}


def cached_model_dir(config: TinyStoriesConfig) -> Path:
    return entry_dir("tiny-stories", cache_key(config))


def tiny_story_model(config: TinyStoriesConfig | None = None, quiet: bool = False) -> Path:
    """Directory of the tiny base model for `config` (defaults when None), pretrained first if not cached."""
    config = config or TinyStoriesConfig()
    return cached("tiny-stories", cache_key(config), lambda folder: pretrain_with_progress(config, folder, quiet))


def is_pretrained(folder: Path) -> bool:
    return is_cached(folder)


def read_summary(folder: Path) -> dict[str, Any]:
    return json.loads((folder / SUMMARY_FILE).read_text())


__all__ = ["TinyStoriesConfig", "cached_model_dir", "pretrain", "pretrain_with_progress", "read_summary",
           "tiny_story_model"]
