"""`tunelens run hops-train`: the checkpoint pair of the hops benchmark.

A base model gets the function tokens and is saved as the "untrained" checkpoint; it is then fine-tuned on the
corpus with the shared training loop (loss on every token, shuffled epochs, AdamW, constant learning rate), and
saved at chosen fractions of training and at the end ("trained"). Every saved checkpoint is scored by the logit
evaluation (`tunelens.attribution.evaluate`). Run directory:

    checkpoints/untrained/  checkpoints/step-<N>/ ...  checkpoints/trained/   (Hugging Face directories)
    summary.json: accuracy.{depth0,hops} of the trained model, checkpoints.<name>.accuracy.*, losses, times
    figures/accuracy.png (accuracy per checkpoint), figures/loss.png
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, PositiveInt, field_validator

from tunelens.attribution.checkpoints import TINY, tiny_profile, with_function_tokens
from tunelens.attribution.corpus import Document, function_tokens, functions_of, read_corpus
from tunelens.attribution.evaluate import evaluate_all
from tunelens.config import Schedule, TunelensConfig, config_hash
from tunelens.lm.examples import TokenizedExample
from tunelens.lm.trainer import CHECKPOINT, DTYPES, Hooks, TrainSettings, mean_loss, train
from tunelens.runs import Run, resolve_device

CHECKPOINTS = "checkpoints"
UNTRAINED, TRAINED = "untrained", "trained"


class HopsTrainConfig(TunelensConfig):
    """Train the checkpoint pair of the hops benchmark."""

    corpus: str | None = Field(None, description="Training corpus (JSONL with text, func, role, hop_depth, "
                               "constant); null = the shipped 20hops.jsonl (3000 documents).")
    model: str = Field(TINY, description="'tiny' (the profile built from scratch), or an alias, hub id or "
                       "directory whose tokenizer gets the function tokens.")
    add_number_tokens: bool = Field(False, description="Also add the integers 0-100 as tokens (for a pretrained "
                                    "tokenizer that splits numbers; the tiny profile always has them).")
    dtype: str = Field("float32", description="Weights' dtype: float32, bfloat16 or float16.")
    vocab_size: PositiveInt = Field(2048, description="Tiny profile: BPE vocabulary trained on the corpus.")
    d_model: PositiveInt = Field(128, description="Tiny profile: hidden width.")
    n_layers: PositiveInt = Field(4, description="Tiny profile: decoder layers.")
    n_heads: PositiveInt = Field(4, description="Tiny profile: attention heads.")
    d_mlp: PositiveInt = Field(512, description="Tiny profile: MLP width.")
    max_len: PositiveInt = Field(256, description="Longest document in tokens (longer ones are cut).")
    eval_inputs: list[int] = Field(list(range(1, 101)), description="Inputs x of the logit evaluation's prompts "
                                   "(the original: 1..100).")
    checkpoint_fractions: list[float] = Field([0.25, 0.5, 0.75], description="Fractions of training at which a "
                                              "checkpoint is saved and evaluated (the final one always is).")
    train: TrainSettings = Field(default_factory=lambda: TrainSettings(
        epochs=4, batch_size=16, lr=2e-3, weight_decay=0.01, betas=(0.9, 0.95),
        lr_schedule=Schedule(kind="constant", final_frac=1.0), checkpoint_every=50),
        description="Optimisation (set `epochs`; the steps follow from the corpus size).")

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        return value

    @field_validator("corpus")
    @classmethod
    def _readable_corpus(cls, path: str | None) -> str | None:
        return check_corpus(path)

    @field_validator("checkpoint_fractions")
    @classmethod
    def _fractions(cls, values: list[float]) -> list[float]:
        if any(not 0 < v < 1 for v in values):
            raise ValueError("checkpoint fractions must lie strictly between 0 and 1")
        return sorted(set(values))


def check_corpus(path: str | None) -> str | None:
    """A config's corpus is read when the config is loaded, so a malformed line stops the run before it starts."""
    from tunelens.config import UsageError

    if path is not None:
        try:
            read_corpus(path)
        except UsageError as err:
            raise ValueError(str(err)) from None
    return path


def corpus_path(config: HopsTrainConfig) -> Path:
    from tunelens.data import HOPS_CORPUS

    return Path(config.corpus) if config.corpus else HOPS_CORPUS


def document_rows(tokenizer, documents: list[Document], max_len: int) -> list[TokenizedExample]:
    """Each document as one training row with every token in the loss (the original trains on raw text)."""
    rows = []
    for doc in documents:
        ids = tokenizer(doc.text, truncation=True, max_length=max_len)["input_ids"]
        rows.append(TokenizedExample(ids, [1] * len(ids), doc.index, 0))
    return rows


def untrained_model(config: HopsTrainConfig, documents: list[Document], tokens: list[str], device: torch.device):
    if config.model == TINY:
        model, tokenizer = tiny_profile([d.text for d in documents], tokens, config.seed, config.vocab_size,
                                        config.d_model, config.n_layers, config.n_heads, config.d_mlp,
                                        max(config.max_len, 64))
        return model.to(device=device, dtype=DTYPES[config.dtype]), tokenizer
    return with_function_tokens(config.model, tokens, config.seed, config.add_number_tokens, DTYPES[config.dtype],
                                device)


def save_checkpoint(model, tokenizer, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def checkpoint_steps(fractions: list[float], total: int) -> dict[int, str]:
    """Step -> checkpoint name: `step-N` at each fraction of `total` (rounded up, at least 1), `trained` at the end."""
    steps = {max(1, math.ceil(f * total)): f"step-{max(1, math.ceil(f * total))}" for f in fractions}
    steps[total] = TRAINED
    return steps


def run(config: HopsTrainConfig, run: Run) -> dict[str, Any]:
    from tunelens.lm.loading import quiet_progress_bars

    quiet_progress_bars()
    start = time.perf_counter()
    device = resolve_device(config.device)
    documents = read_corpus(corpus_path(config))
    functions = functions_of(documents)
    tokens = function_tokens(functions)
    model, tokenizer = untrained_model(config, documents, tokens, device)
    tokenizer.padding_side = "right"
    rows = document_rows(tokenizer, documents, config.max_len)
    settings = config.train.for_rows(len(rows))
    n_params = sum(p.numel() for p in model.parameters())
    run.log(f"{config.model}: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}; {len(documents)} documents "
            f"({len(functions)} functions, depths {sorted({f.depth for f in functions})}), {settings.steps} steps of "
            f"{settings.batch_size} "
            f"({settings.epochs or settings.steps * settings.batch_size / len(rows):g} epochs) on {device}")
    folder = run.dir / CHECKPOINTS
    results: dict[str, Any] = {}

    def evaluate(name: str) -> None:
        t0 = time.perf_counter()
        results[name] = evaluate_all(model, tokenizer, functions, device, config.eval_inputs)
        results[name]["eval_seconds"] = round(time.perf_counter() - t0, 2)
        run.log(f"{name}: accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in results[name]["accuracy"].items()))

    if not (folder / UNTRAINED).is_dir():
        save_checkpoint(model, tokenizer, folder / UNTRAINED)
    evaluate(UNTRAINED)
    loss_before = mean_loss(model, rows, tokenizer.pad_token_id, device=device)
    schedule = checkpoint_steps(config.checkpoint_fractions, settings.steps)

    def after_step(done: int) -> None:
        if done in schedule and schedule[done] != TRAINED:
            save_checkpoint(model, tokenizer, folder / schedule[done])
            evaluate(schedule[done])
            model.train()

    result = train(model, rows, settings, pad_id=tokenizer.pad_token_id, seed=config.seed, device=device, run=run,
                   hooks=Hooks(after_step=after_step), checkpoint_dir=run.dir / CHECKPOINT,
                   fingerprint=config_hash({k: v for k, v in config.model_dump(mode="json").items()
                                            if k != "device"}))
    save_checkpoint(model, tokenizer, folder / TRAINED)
    evaluate(TRAINED)
    loss_after = mean_loss(model, rows, tokenizer.pad_token_id, device=device)
    shutil.rmtree(run.dir / CHECKPOINT, ignore_errors=True)  # finished: the saved checkpoints replace it
    from tunelens.attribution.figures import plot_checkpoint_accuracy
    from tunelens.lm.figures import plot_training_curve

    names = [UNTRAINED, *[n for s, n in sorted(schedule.items()) if n in results and n != TRAINED], TRAINED]
    plot_checkpoint_accuracy({n: results[n]["accuracy"] for n in names}, run.figure_path("accuracy"))
    plot_training_curve(run.dir / "metrics.jsonl", run.figure_path("loss"),
                        title=f"hops-train: corpus loss {loss_before:.3f} -> {loss_after:.3f}")
    return {"accuracy": results[TRAINED]["accuracy"], "confidence": results[TRAINED]["confidence"],
            "checkpoints": {n: {"path": f"{CHECKPOINTS}/{n}", **{k: results[n][k] for k in ("accuracy", "confidence")},
                                "per_function": {kind: results[n][kind]["per_function"] for kind in
                                                 results[n]["accuracy"]}} for n in names},
            "trained": f"{CHECKPOINTS}/{TRAINED}", "untrained": f"{CHECKPOINTS}/{UNTRAINED}",  # in the run dir
            "corpus": str(corpus_path(config)), "n_documents": len(documents), "n_params": n_params,
            "vocab_size": len(tokenizer), "steps": settings.steps, "resumed_from_step": result.resumed_from,
            "corpus_loss": {"before": loss_before, "after": loss_after},
            "final_train_loss": result.final_train_loss, "train_seconds": round(result.train_seconds, 1),
            "tokens_per_second": round(result.tokens_per_second), "seconds": round(time.perf_counter() - start, 1)}


def cached_pair(config: HopsTrainConfig) -> Path:
    """The run directory of a hops-train run of this config, trained on first use and cached."""
    from tunelens.cache import cached
    from tunelens.registry import get_experiment
    from tunelens.runs import run_experiment

    def build(folder: Path) -> None:
        run_experiment(get_experiment("hops-train"), config, folder, quiet=True)

    key = {k: v for k, v in config.model_dump(mode="json").items() if k != "device"}
    return cached("hops-train", key, build)


__all__ = ["HopsTrainConfig", "cached_pair", "checkpoint_steps", "document_rows", "run"]
