"""`tunelens run caps` (and its variants): gradient-routed fine-tuning of dual adapters on the ALL-CAPS task.

The run is the shared trainer (`tunelens.lm.trainer.train`) with routing hooks: each micro-batch's rows are
routed inside the adapters (labeled bad -> bad branch only; labeled good -> good branch only, bad ablated in
their forward pass), one AdamW and schedule per branch, and a branch's optimiser steps only when some row of the
global batch may update it (with batch_size 1 that is the original's routing by optimiser step). Variants are
config switches: no labels (the control), labeled-good steps, labeled-bad examples first (frontload), and
fine-tuning the good branch alone with the bad one ablated after training (post-ablation).

Every mode (full, bad_ablated, good_ablated, base) is evaluated on held-out stories: mean next-token loss on the
stories in capitals (caps_loss) and as written (held_out_loss), and the share of sampled continuations of
uppercased 3-word openings that are in capitals (caps_rate, with a bootstrap 95 % interval).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveInt, model_validator

from tunelens.config import TunelensConfig, UsageError, config_hash
from tunelens.lm.examples import Example, TokenizedExample, tokenize_examples
from tunelens.lm.loading import TINY_STORIES
from tunelens.lm.trainer import CHECKPOINT, Hooks, TrainSettings, mean_loss, train
from tunelens.routing import adapters
from tunelens.routing.adapters import ROUTE_BAD, ROUTE_BOTH, ROUTE_GOOD, DualAdapterSettings
from tunelens.routing.caps import draw_story, is_caps, opening, read_stories
from tunelens.runs import Run, resolve_device

Mode = Literal["full", "bad_ablated", "good_ablated", "base"]
MODE_SCALES: dict[str, tuple[float, float]] = {"full": (1.0, 1.0), "bad_ablated": (1.0, 0.0),
                                               "good_ablated": (0.0, 1.0), "base": (0.0, 0.0)}


class CapsEvalSettings(BaseModel):
    """How each mode is measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modes: list[Mode] = Field(default_factory=lambda: list(MODE_SCALES), description="Scale settings to evaluate.")
    n_prompts: PositiveInt = Field(128, description="Uppercased 3-word openings sampled for the caps rate.")
    max_new_tokens: PositiveInt = Field(48, description="Tokens sampled per opening.")
    temperature: NonNegativeFloat = Field(1.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass (1 = the full distribution).")
    batch_size: PositiveInt = Field(64, description="Rows per forward pass when scoring and sampling.")


class CapsConfig(TunelensConfig):
    """Gradient-routed dual-adapter fine-tuning on stories of which some are written in capitals."""

    model: str = Field(TINY_STORIES, description="'tiny-stories', an alias, hub id or model directory.")
    data: str | None = Field(None, description="Stories JSONL (a 'story' or 'text' field); null = the corpus.")
    eval_data: str | None = Field(None, description="Held-out stories JSONL; null = the corpus test split, or the "
                                  "last n_eval_stories of data.")
    n_train_stories: PositiveInt = Field(4000, description="Corpus stories to train on.")
    n_eval_stories: PositiveInt = Field(100, description="Held-out stories for the losses.")
    corpus_seed: NonNegativeInt = Field(0, description="Seed of the story corpus.")
    max_len: PositiveInt = Field(128, description="Longest row in tokens (the tiny model's context is 128).")
    caps_frac: float = Field(0.3, ge=0, le=1, description="Share of training stories written in capitals.")
    labeled_bad_frac: float = Field(0.5, ge=0, le=1, description="Share of the caps stories labeled bad.")
    labeled_good_frac: float = Field(0.1, ge=0, le=1, description="Share of clean stories given a labeled-good "
                                     "step (good branch only, bad ablated).")
    use_labels: bool = Field(True, description="false = the control: same data, every row updates both branches.")
    labeled_bad_ablates_good: bool = Field(False, description="Run labeled-bad rows with the good branch ablated "
                                           "(as labeled-good rows run without the bad one); false = the original: "
                                           "the good branch runs, detached.")
    frontload_steps: NonNegativeInt = Field(0, description="Steps on labeled-bad stories alone before training.")
    post_ablation_steps: NonNegativeInt = Field(0, description="After training: steps of the good branch alone, "
                                                "bad ablated, on known-good (clean) stories.")
    post_ablation_stories: PositiveInt = Field(64, description="Known-good stories for post-ablation fine-tuning.")
    ortho_lambda: NonNegativeFloat = Field(0.0, description="Weight of the squared cosine between the branches' "
                                           "outputs in the loss.")
    adapter: DualAdapterSettings = Field(default_factory=DualAdapterSettings, description="The two branches.")
    train: TrainSettings = Field(default_factory=TrainSettings, description="Optimisation (one AdamW per branch).")
    eval: CapsEvalSettings = Field(default_factory=CapsEvalSettings, description="Evaluation per mode.")

    @model_validator(mode="after")
    def _eval_needs_data(self) -> CapsConfig:
        if self.eval_data is not None and self.data is None:
            raise ValueError("eval_data is given without data")
        return self


# ---------------------------------------------------------------------------------------------------- data


def load_stories(config: CapsConfig) -> tuple[list[str], list[str]]:
    if config.data is None:
        from tunelens.lm.corpus import story_splits

        return story_splits(config.n_train_stories, config.n_eval_stories, config.corpus_seed)
    stories = read_stories(config.data)
    if config.eval_data is not None:
        return stories, read_stories(config.eval_data)[: config.n_eval_stories]
    if len(stories) <= config.n_eval_stories:
        raise UsageError(f"{config.data}: {len(stories)} stories is too few to hold out {config.n_eval_stories}")
    return stories[: -config.n_eval_stories], stories[-config.n_eval_stories:]


def training_set(stories: Sequence[str], config: CapsConfig) -> tuple[list[Example], list[int]]:
    """The stories as trained on (caps ones uppercased) and each one's route."""
    examples, routes = [], []
    for index, story in enumerate(stories):
        drawn = draw_story(config.seed, index, config.caps_frac, config.labeled_bad_frac, config.labeled_good_frac)
        examples.append(Example("", story.upper() if drawn.is_caps else story, {"is_caps": drawn.is_caps}))
        routes.append(drawn.route if config.use_labels else ROUTE_BOTH)
    return examples, routes


def tokenize_stories(tokenizer, examples: Sequence[Example], max_len: int) -> list[TokenizedExample]:
    return tokenize_examples(tokenizer, examples, loss_on="all", max_len=max_len)


def routing_hooks(routes: Sequence[int], ortho_lambda: float = 0.0, ablate_good: bool = False) -> Hooks:
    """Routes are looked up by the rows' document index."""
    route_of = torch.tensor(list(routes))

    def around_batch(model, batch):
        return adapters.routed(model, route_of[batch.index.cpu()].to(batch.index.device), ablate_good)

    def extra_loss(model, batch, logits):
        return ortho_lambda * adapters.orthogonality_loss(model).to(logits.device)

    return Hooks(around_batch=around_batch, param_groups=adapters.param_groups,
                 groups_to_step=lambda rows: adapters.groups_to_step([int(route_of[r.index]) for r in rows]),
                 extra_loss=extra_loss if ortho_lambda > 0 else None)


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate_modes(model, tokenizer, eval_stories: Sequence[str], settings: CapsEvalSettings, max_len: int,
                   seed: int, device: torch.device) -> dict[str, dict[str, Any]]:
    """caps_loss, held_out_loss and caps_rate (with its interval) per mode; every mode samples with the same
    seeded generator, so modes differ only by the adapters' scales."""
    from tunelens.lm.generation import sample_batched
    from tunelens.lm.scoring import bootstrap_ci

    pad_id = tokenizer.pad_token_id
    normal = tokenize_stories(tokenizer, [Example("", s) for s in eval_stories], max_len)
    caps = tokenize_stories(tokenizer, [Example("", s.upper()) for s in eval_stories], max_len)
    prompts = [opening(eval_stories[i % len(eval_stories)]).upper() for i in range(settings.n_prompts)]
    results = {}
    for mode in settings.modes:
        with adapters.scales(model, *MODE_SCALES[mode]):
            caps_loss = mean_loss(model, caps, pad_id, settings.batch_size, device=device)
            held_out = mean_loss(model, normal, pad_id, settings.batch_size, device=device)
            continuations = sample_batched(model, tokenizer, settings.batch_size, prompts,
                                           max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                           top_p=settings.top_p, generator=torch.Generator().manual_seed(seed))
        flags = [float(is_caps(c)) for c in continuations]
        results[mode] = {"caps_loss": caps_loss, "held_out_loss": held_out, "caps_rate": sum(flags) / len(flags),
                         "caps_rate_ci": list(bootstrap_ci(flags, seed=seed)),
                         "samples": [p + c for p, c in zip(prompts[:3], continuations[:3])]}
    return results


def describe_caps_mode(values: dict[str, Any]) -> str:
    """One line of a mode's results."""
    low, high = values["caps_rate_ci"]
    return (f"caps loss {values['caps_loss']:.3f}, held-out loss {values['held_out_loss']:.3f}, caps rate "
            f"{values['caps_rate']:.3f} [{low:.3f}, {high:.3f}]")


def localisation(modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ratios the study's bar is stated in (present only when the modes they need were evaluated)."""
    if not {"full", "bad_ablated", "good_ablated"} <= set(modes):
        return {}
    full, bad_off, good_off = modes["full"], modes["bad_ablated"], modes["good_ablated"]
    ratios = {
        "bad_ablated_over_full_caps_rate": bad_off["caps_rate"] / full["caps_rate"] if full["caps_rate"] else None,
        "bad_ablated_over_full_caps_loss": bad_off["caps_loss"] / full["caps_loss"],
        "good_ablated_over_full_caps_loss": good_off["caps_loss"] / full["caps_loss"],
        "bad_ablated_over_full_held_out_loss": bad_off["held_out_loss"] / full["held_out_loss"],
    }
    checks = {
        "full_caps_rate_at_least_0.2": full["caps_rate"] >= 0.2,
        "bad_ablated_caps_rate_at_most_quarter_of_full": bad_off["caps_rate"] <= full["caps_rate"] / 4,
        "bad_ablated_caps_loss_at_least_1.5x_full": ratios["bad_ablated_over_full_caps_loss"] >= 1.5,
        "good_ablated_caps_loss_at_most_1.2x_full": ratios["good_ablated_over_full_caps_loss"] <= 1.2,
        "bad_ablated_held_out_within_5pct_of_full": abs(ratios["bad_ablated_over_full_held_out_loss"] - 1) <= 0.05,
    }
    return {"ratios": ratios, "checks": checks, "localised": all(checks.values())}


# ---------------------------------------------------------------------------------------------------- run


def run(config: CapsConfig, run: Run) -> dict[str, Any]:
    from tunelens.lm.loading import load_model, load_tokenizer, quiet_progress_bars, resolve_name

    quiet_progress_bars()
    device = resolve_device(config.device)
    source = resolve_name(config.model)  # the loaders say in one line when a directory is not a model
    tokenizer = load_tokenizer(source, padding_side="right")
    model = load_model(source, device=device)
    train_stories, eval_stories = load_stories(config)
    examples, routes = training_set(train_stories, config)
    rows = tokenize_stories(tokenizer, examples, config.max_len)
    adapters.add_dual_adapters(model, config.adapter)
    groups = adapters.param_groups(model)
    n_caps = sum(e.meta["is_caps"] for e in examples)
    run.log(f"{config.model} ({source}) on {device}: {len(rows)} stories, {n_caps} in caps, "
            f"{routes.count(ROUTE_BAD)} labeled bad, {routes.count(ROUTE_GOOD)} labeled good; {config.adapter.kind} "
            f"adapters on layers {adapters.chosen_layers(len(adapters.decoder_layers(model)), config.adapter.layers)}"
            f", {adapters.n_params(groups.get('good', []))} good and {adapters.n_params(groups['bad'])} bad "
            f"parameters; {config.train.steps} steps of {config.train.batch_size}")
    start = time.perf_counter()
    pad_id = tokenizer.pad_token_id
    if config.frontload_steps:
        labeled = [i for i, r in enumerate(routes) if r == ROUTE_BAD]
        if not labeled:
            raise UsageError("frontload_steps > 0, but no story is labeled bad")
        settings = config.train.model_copy(update={"steps": config.frontload_steps, "checkpoint_every": 0})
        train(model, [rows[i] for i in labeled], settings, pad_id=pad_id, seed=config.seed, device=device,
              hooks=routing_hooks(routes, ablate_good=config.labeled_bad_ablates_good), run=run)
    result = train(model, rows, config.train, pad_id=pad_id, seed=config.seed, device=device,
                   hooks=routing_hooks(routes, config.ortho_lambda, config.labeled_bad_ablates_good), run=run,
                   checkpoint_dir=run.dir / CHECKPOINT,
                   fingerprint=config_hash({k: v for k, v in config.model_dump(mode="json").items()
                                            if k != "device"}))
    if config.post_ablation_steps:
        post_ablation_finetune(model, rows, examples, routes, config, pad_id, device, run)
    train_seconds = time.perf_counter() - start
    run.log(f"trained in {train_seconds:.1f}s; evaluating modes {', '.join(config.eval.modes)}")
    start = time.perf_counter()
    modes = evaluate_modes(model, tokenizer, eval_stories, config.eval, config.max_len, config.seed, device)
    eval_seconds = time.perf_counter() - start
    for mode, values in modes.items():
        run.log(f"{mode:>12}: {describe_caps_mode(values)}")
    saved = adapters.save_adapters(model, config.adapter, run.dir / "adapters", base_model=source)
    tokenizer.save_pretrained(saved)
    from tunelens.routing.figures import plot_modes

    plot_modes(modes, run.figure_path("modes"), title=f"{run.name}: metrics per mode")
    summary = {"modes": modes, **localisation(modes), "n_train_stories": len(rows), "n_caps": n_caps,
               "n_labeled_bad": routes.count(ROUTE_BAD), "n_labeled_good": routes.count(ROUTE_GOOD),
               "n_eval_stories": len(eval_stories), "steps": result.steps, "final_train_loss": result.final_train_loss,
               "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
               "adapters": str(saved)}
    import shutil

    shutil.rmtree(run.dir / CHECKPOINT, ignore_errors=True)  # finished: the saved adapters replace it
    return summary


def post_ablation_finetune(model, rows: Sequence[TokenizedExample], examples: Sequence[Example],
                           routes: Sequence[int], config: CapsConfig, pad_id: int, device: torch.device,
                           run: Run) -> None:
    """Ablate the bad branch and train the good one alone on known-good stories (clean and not labeled bad)."""
    known_good = [row for row, example, route in zip(rows, examples, routes)
                  if not example.meta["is_caps"] and route != ROUTE_BAD][: config.post_ablation_stories]
    bad = adapters.branch_params(model, "bad")
    for param in bad:
        param.requires_grad_(False)
    settings = config.train.model_copy(update={"steps": config.post_ablation_steps, "checkpoint_every": 0})
    with adapters.scales(model, 1.0, 0.0):
        train(model, known_good, settings, pad_id=pad_id, seed=config.seed + 1, device=device,
              hooks=Hooks(param_groups=lambda m: {"good": adapters.branch_params(m, "good")}), run=run)
    for param in bad:
        param.requires_grad_(True)


def adapters_dir(run_dir: str | Path) -> Path:
    folder = Path(run_dir) / "adapters"
    adapters.read_adapter_config(folder)  # one line if there are none
    return folder
