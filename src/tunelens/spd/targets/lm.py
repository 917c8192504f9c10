"""A causal language model as an SPD target: chosen `nn.Linear` / `nn.Embedding` layers, KL output loss.

The default model is the toolkit's tiny story model (pretrained locally on the synthetic story corpus and
cached); any Hugging Face causal LM works through `target.model` (alias, hub id or local directory). Batches
are random windows of the tokenised training stories; evaluation uses fixed windows of held-out stories. The
target names its decoder stack, so masked passes skip the decoder layers before the first decomposed one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt
from torch import Tensor, nn

from tunelens.config import UsageError
from tunelens.lm.loading import TINY_STORIES
from tunelens.spd.targets import Log, Target, freeze, register_target


class LmTargetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["lm"] = "lm"
    model: str = Field(TINY_STORIES, description="'tiny-stories' (the local tiny base model), an alias, hub id "
                       "or directory.")
    modules: list[str] = Field(default_factory=lambda: ["model.embed_tokens"],
                               description="Exact module names to decompose (nn.Linear or nn.Embedding).")
    seq_len: PositiveInt = Field(64, description="Tokens per training window.")
    n_train_stories: PositiveInt = Field(4000, description="Training stories tokenised for batches.")
    n_eval_stories: PositiveInt = Field(200, description="Held-out stories for evaluation.")
    corpus_seed: NonNegativeInt = Field(0, description="Seed of the synthetic story corpus.")

    def module_names(self) -> list[str]:
        return list(self.modules)


@dataclass(kw_only=True)
class LmTarget(Target):
    """A language model: token ids in, logits out, evaluated on fixed windows of held-out text."""

    tokenizer: Any  # decodes token ids in figures
    held_out: Callable[[int], Tensor]

    def eval_batch(self, batch_size: int) -> Tensor:
        return self.held_out(batch_size)

    def weights_to_save(self) -> None:
        return None  # reloaded from its source: no copy of a checkpoint per run


def logits_of(model: nn.Module, input_ids: Tensor) -> Tensor:
    return model(input_ids=input_ids, use_cache=False).logits


@register_target("lm")
def build_lm_target(config: LmTargetConfig, device: torch.device, log: Log,
                    weights: dict[str, Tensor] | None = None) -> LmTarget:
    """The model named in the config, loaded from its source (runs save no copy of it, so none is reloaded)."""
    if weights is not None:
        raise ValueError("language-model targets are loaded from target.model, not from saved weights")
    from tunelens.lm.batching import token_windows
    from tunelens.lm.corpus import story_splits
    from tunelens.lm.layers import decoder_stack
    from tunelens.lm.loading import load_model, load_tokenizer, resolve_name

    source = resolve_name(config.model)
    log(f"target: language model {config.model} ({source})")
    tokenizer = load_tokenizer(source, padding_side="right")
    model = freeze(load_model(source, dtype=torch.float32, device=device))
    modules = dict(model.named_modules())
    for name in config.modules:
        if name not in modules:
            candidates = [n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.Embedding))]
            raise UsageError(f"target.modules: no module '{name}' in {config.model}; decomposable modules include "
                             f"{', '.join(candidates[:8])} ...")
        if not isinstance(modules[name], (nn.Linear, nn.Embedding)):
            raise UsageError(f"target.modules: '{name}' is a {type(modules[name]).__name__}; only nn.Linear and "
                             "nn.Embedding can be decomposed")
    train_stories, eval_stories = story_splits(config.n_train_stories, config.n_eval_stories, config.corpus_seed)
    train_windows = token_windows(train_stories, tokenizer, config.seq_len).to(device)
    eval_windows = token_windows(eval_stories, tokenizer, config.seq_len).to(device)

    def sample(batch_size: int) -> Tensor:
        return train_windows[torch.randint(0, len(train_windows), (batch_size,), device=device)]

    def held_out(batch_size: int) -> Tensor:
        return eval_windows[:batch_size]

    info = {"model": config.model, "n_params": sum(p.numel() for p in model.parameters()),
            "n_train_windows": len(train_windows), "n_eval_windows": len(eval_windows)}
    return LmTarget(model=model, forward_fn=logits_of, module_names=list(config.modules), sample_batch=sample,
                    output_loss="kl", info=info, tokenizer=tokenizer, held_out=held_out, blocks=decoder_stack(model))
