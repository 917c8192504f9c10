"""`tunelens routing eval EVAL.yaml`: several caps runs x modes, cached, and one comparison figure.

Each run is re-evaluated from its directory (its config.yaml and adapters/), so the numbers do not depend on
what the run itself wrote. Results are cached in one JSON file keyed by run name and mode; only missing entries
are computed (the file is rewritten atomically after each one), and `force` recomputes them all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tunelens.config import UsageError, read_yaml, validate_config
from tunelens.routing.train import CapsConfig, CapsEvalSettings, Mode
from tunelens.runs import atomic_write_text


class EvalRun(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Key of the run in the cache and the figure.")
    run_dir: str = Field(description="A caps run directory (config.yaml and adapters/).")
    modes: list[Mode] = Field(default_factory=lambda: ["full", "bad_ablated", "good_ablated"],
                              description="Modes to evaluate.")
    label: str | None = Field(None, description="Label in the figure (default: the name).")


class EvalPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    runs: list[EvalRun] = Field(min_length=1, description="The runs to compare.")
    cache: str = Field("routing_eval.json", description="Results file, relative to the YAML's folder.")
    figure: str = Field("routing_eval.png", description="Comparison figure, relative to the YAML's folder.")
    eval: CapsEvalSettings | None = Field(None, description="Overrides each run's own eval settings.")


def read_plan(path: str | Path) -> EvalPlan:
    plan = validate_config(EvalPlan, read_yaml(path), str(path))  # type: ignore[arg-type]
    names = [run.name for run in plan.runs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UsageError(f"{path}: run name '{duplicate}' appears twice")
    return plan


def run_config(run_dir: Path) -> CapsConfig:
    if not (run_dir / "config.yaml").is_file():
        raise UsageError(f"{run_dir}: not a caps run directory (no config.yaml)")
    return validate_config(CapsConfig, read_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml"))


def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"{path}: unreadable results cache; delete it or use --force") from None


def evaluate_plan(plan_path: str | Path, force: bool = False, log: Callable[[str], None] = print
                  ) -> dict[str, dict[str, Any]]:
    """Fill the cache with every (run, mode) of the plan and draw the figure; returns the plan's results."""
    import torch

    from tunelens.lm.loading import load_tokenizer
    from tunelens.routing.export import load_routed
    from tunelens.routing.figures import plot_comparison
    from tunelens.routing.train import evaluate_modes, load_stories

    plan_path = Path(plan_path)
    plan = read_plan(plan_path)
    cache_path = plan_path.parent / plan.cache
    cache = {} if force else read_cache(cache_path)
    for entry in plan.runs:
        run_dir = Path(entry.run_dir)
        if not run_dir.is_absolute():
            run_dir = plan_path.parent / run_dir
        missing = [m for m in entry.modes if m not in cache.get(entry.name, {})]
        if not missing:
            continue
        config = run_config(run_dir)
        model, _ = load_routed(run_dir)
        tokenizer = load_tokenizer(run_dir / "adapters", padding_side="right")
        _, eval_stories = load_stories(config)
        settings = (plan.eval or config.eval).model_copy(update={"modes": missing})
        for mode in missing:
            one = settings.model_copy(update={"modes": [mode]})
            values = evaluate_modes(model, tokenizer, eval_stories, one, config.max_len, config.seed,
                                    torch.device("cpu"))[mode]
            cache.setdefault(entry.name, {})[mode] = values
            atomic_write_text(cache_path, json.dumps(cache, indent=1))
            log(f"{entry.name} {mode}: caps loss {values['caps_loss']:.3f}, held-out loss "
                f"{values['held_out_loss']:.3f}, caps rate {values['caps_rate']:.3f}")
    results = {entry.label or entry.name: {m: cache[entry.name][m] for m in entry.modes} for entry in plan.runs}
    plot_comparison(results, plan_path.parent / plan.figure, title="caps runs x modes")
    return results
