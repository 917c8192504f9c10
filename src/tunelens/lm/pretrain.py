"""Pretrain the tiny base language model on the synthetic story corpus.

`tiny_story_model()` is how studies get "the tiny base model": it returns a cached Hugging Face directory
(model + tokenizer), trained on first use and keyed by the hash of its config.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from tunelens.config import Schedule, TunelensConfig, config_hash, schedule_value
from tunelens.runs import cache_dir, write_json


class TinyStoriesConfig(TunelensConfig):
    """Tiny base LM on synthetic stories; defaults train in a few minutes on a 2-core CPU."""

    architecture: Literal["llama", "olmo2"] = Field("llama", description="transformers architecture.")
    vocab_size: PositiveInt = Field(2048, description="BPE vocabulary size (special tokens included).")
    d_model: PositiveInt = Field(128, description="Hidden width.")
    n_layers: PositiveInt = Field(4, description="Transformer blocks.")
    n_heads: PositiveInt = Field(4, description="Attention heads.")
    d_mlp: PositiveInt = Field(384, description="MLP width.")
    seq_len: PositiveInt = Field(128, description="Tokens per training window.")
    n_train_stories: PositiveInt = Field(20_000, description="Training stories (tokenizer and LM).")
    n_eval_stories: PositiveInt = Field(200, description="Held-out stories for the eval loss.")
    corpus_seed: NonNegativeInt = Field(0, description="Seed of the story corpus.")
    steps: PositiveInt = Field(1500, description="Optimisation steps.")
    batch_size: PositiveInt = Field(32, description="Windows per step.")
    lr: PositiveFloat = Field(3e-3, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    lr_schedule: Schedule = Field(default_factory=lambda: Schedule(kind="cosine", warmup_frac=0.05, final_frac=0.1))
    n_samples: PositiveInt = Field(3, description="Continuations sampled for the summary.")


def windows(token_ids: list[int], seq_len: int) -> torch.Tensor:
    n = len(token_ids) // seq_len
    return torch.tensor(token_ids[: n * seq_len]).view(n, seq_len)


def encode_stories(tokenizer, stories: list[str]) -> list[int]:
    stream: list[int] = []
    for ids in tokenizer(stories, add_special_tokens=False)["input_ids"]:
        stream += [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    return stream


@torch.no_grad()
def mean_loss(model, data: torch.Tensor, batch_size: int = 64) -> float:
    losses = [model(input_ids=data[i:i + batch_size], labels=data[i:i + batch_size]).loss.item() * len(
        data[i:i + batch_size]) for i in range(0, len(data), batch_size)]
    return sum(losses) / len(data)


def pretrain(config: TinyStoriesConfig, out_dir: str | Path, log=print, progress=None) -> dict:
    """Train tokenizer and model, save both to `out_dir` as one HF directory, return the summary."""
    from tunelens.lm.corpus import story_splits
    from tunelens.lm.generation import sample
    from tunelens.lm.tiny import tiny_causal_lm
    from tunelens.lm.tokenizer import train_bpe_tokenizer

    start = time.perf_counter()
    torch.manual_seed(config.seed)
    out_dir = Path(out_dir)
    train_stories, eval_stories = story_splits(config.n_train_stories, config.n_eval_stories, config.corpus_seed)
    tokenizer = train_bpe_tokenizer(train_stories, config.vocab_size)
    train_data = windows(encode_stories(tokenizer, train_stories), config.seq_len)
    eval_data = windows(encode_stories(tokenizer, eval_stories), config.seq_len)
    model = tiny_causal_lm(config.architecture, len(tokenizer), config.d_model, config.n_layers, config.n_heads,
                           config.d_mlp, config.seq_len, tokenizer.bos_token_id, tokenizer.eos_token_id,
                           tokenizer.pad_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"tiny-stories: {n_params / 1e6:.2f}M parameters, {len(train_data)} training windows of {config.seq_len} "
        f"tokens, {config.steps} steps")
    initial_eval = mean_loss(model.eval(), eval_data)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    loss = torch.tensor(math.nan)
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = schedule_value(config.lr_schedule, config.lr, step, config.steps)
        batch = train_data[torch.randint(0, len(train_data), (config.batch_size,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if progress is not None:
            progress(step, loss.item())
    model.eval()
    eval_loss = mean_loss(model, eval_data)
    prompts = [" ".join(story.split()[:6]) for story in eval_stories[: config.n_samples]]
    samples = sample(model, tokenizer, prompts, max_new_tokens=60, temperature=0.8, top_p=0.95, generator=generator)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.padding_side = "right"
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    summary = {"n_params": n_params, "steps": config.steps, "train_loss_last_batch": loss.item(),
               "eval_loss_initial": initial_eval, "eval_loss": eval_loss,
               "samples": [{"prompt": p, "continuation": s} for p, s in zip(prompts, samples)],
               "seconds": round(time.perf_counter() - start, 1), "config": config.model_dump(mode="json")}
    write_json(out_dir / "pretrain_summary.json", summary)
    return summary


def cached_model_dir(config: TinyStoriesConfig) -> Path:
    return cache_dir() / "tiny-stories" / config_hash(config)


def tiny_story_model(config: TinyStoriesConfig | None = None, log=print) -> Path:
    """Directory of the tiny base model for `config` (defaults when None), pretrained first if not cached."""
    config = config or TinyStoriesConfig()
    folder = cached_model_dir(config)
    if not (folder / "pretrain_summary.json").is_file():  # written last: its presence means a finished model
        log(f"tiny-stories: no cached model, pretraining into {folder}")
        pretrain(config, folder, log)
    return folder


def read_summary(folder: Path) -> dict:
    return json.loads((folder / "pretrain_summary.json").read_text())
