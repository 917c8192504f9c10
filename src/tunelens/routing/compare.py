"""`tunelens routing eval EVAL.yaml`: several caps runs (or several MBPP runs) x modes, cached, and one comparison
figure.

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
from tunelens.routing.mbpp import MBPP_MODE_SCALES, MbppConfig, MbppEvalSettings
from tunelens.routing.train import MODE_SCALES, CapsConfig, CapsEvalSettings
from tunelens.runs import atomic_write_text

DEFAULT_MODES = {"caps": ["full", "bad_ablated", "good_ablated"], "mbpp": list(MBPP_MODE_SCALES)}
KNOWN_MODES = {"caps": list(MODE_SCALES), "mbpp": list(MBPP_MODE_SCALES)}


class EvalRun(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Key of the run in the cache and the figure.")
    run_dir: str = Field(description="A caps or mbpp run directory (config.yaml and adapters/).")
    modes: list[str] | None = Field(None, description="Modes to evaluate; null = full, bad_ablated, good_ablated for "
                                    "caps runs, all four for mbpp runs.")
    label: str | None = Field(None, description="Label in the figure (default: the name).")


class EvalPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    runs: list[EvalRun] = Field(min_length=1, description="The runs to compare.")
    cache: str = Field("routing_eval.json", description="Results file, relative to the YAML's folder.")
    figure: str = Field("routing_eval.png", description="Comparison figure, relative to the YAML's folder.")
    eval: CapsEvalSettings | None = Field(None, description="Overrides each caps run's own eval settings.")
    mbpp_eval: MbppEvalSettings | None = Field(None, description="Overrides each mbpp run's own eval settings.")


def read_plan(path: str | Path) -> EvalPlan:
    plan = validate_config(EvalPlan, read_yaml(path), str(path))  # type: ignore[arg-type]
    names = [run.name for run in plan.runs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UsageError(f"{path}: run name '{duplicate}' appears twice")
    return plan


def run_config(run_dir: Path) -> CapsConfig | MbppConfig:
    """The run's own config: an MBPP run is told from a caps run by its `rh_fraction`."""
    if not (run_dir / "config.yaml").is_file():
        raise UsageError(f"{run_dir}: not a caps or mbpp run directory (no config.yaml)")
    raw = read_yaml(run_dir / "config.yaml")
    kind = MbppConfig if isinstance(raw, dict) and "rh_fraction" in raw else CapsConfig
    return validate_config(kind, raw, str(run_dir / "config.yaml"))


def study_of(config: CapsConfig | MbppConfig) -> str:
    return "mbpp" if isinstance(config, MbppConfig) else "caps"


def modes_of(entry: EvalRun, study: str) -> list[str]:
    modes = DEFAULT_MODES[study] if entry.modes is None else entry.modes
    unknown = [m for m in modes if m not in KNOWN_MODES[study]]
    if unknown:
        raise UsageError(f"run '{entry.name}': mode '{unknown[0]}' is not a {study} mode "
                         f"({', '.join(KNOWN_MODES[study])})")
    return modes


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
    from tunelens.lm.loading import load_tokenizer
    from tunelens.routing.export import load_routed
    from tunelens.routing.figures import plot_comparison, plot_mbpp_modes

    plan_path = Path(plan_path)
    plan = read_plan(plan_path)
    cache_path = plan_path.parent / plan.cache
    cache = {} if force else read_cache(cache_path)
    studies, chosen = set(), {}
    for entry in plan.runs:
        run_dir = Path(entry.run_dir)
        if not run_dir.is_absolute():
            run_dir = plan_path.parent / run_dir
        config = run_config(run_dir)
        study = study_of(config)
        studies.add(study)
        if len(studies) > 1:
            raise UsageError(f"{plan_path}: a plan compares runs of one study, caps or mbpp, not both")
        chosen[entry.name] = modes = modes_of(entry, study)
        missing = [m for m in modes if m not in cache.get(entry.name, {})]
        if not missing:
            continue
        model, _ = load_routed(run_dir)
        tokenizer = load_tokenizer(run_dir / "adapters", padding_side="right")
        measure = mode_evaluator(model, tokenizer, config, plan)
        for mode in missing:
            values = measure(mode)
            cache.setdefault(entry.name, {})[mode] = values
            atomic_write_text(cache_path, json.dumps(cache, indent=1))
            log(f"{entry.name} {mode}: " + describe(values))
    results = {entry.label or entry.name: {m: cache[entry.name][m] for m in chosen[entry.name]}
               for entry in plan.runs}
    if studies == {"mbpp"}:
        plot_mbpp_modes(results, plan_path.parent / plan.figure, title="mbpp runs x modes (95 % intervals)")
    else:
        plot_comparison(results, plan_path.parent / plan.figure, title="caps runs x modes")
    return results


def mode_evaluator(model, tokenizer, config: CapsConfig | MbppConfig, plan: EvalPlan) -> Callable[[str], dict]:
    """A function measuring one mode of the run as the run itself measured it (its data, its seed, its settings
    unless the plan overrides them); the data are read once."""
    import torch

    device = torch.device("cpu")
    if isinstance(config, MbppConfig):
        from tunelens.routing.mbpp import evaluate_mbpp_modes, hacks_for, load_problems
        from tunelens.sandbox import Limits, Sandbox

        mbpp_settings = plan.mbpp_eval or config.eval
        pool, problems = load_problems(config)
        hacks, _ = hacks_for([*pool, *problems], Sandbox(Limits(timeout_s=mbpp_settings.timeout_s),
                                                         workers=mbpp_settings.workers))
        return lambda mode: evaluate_mbpp_modes(model, tokenizer, problems, hacks,
                                                mbpp_settings.model_copy(update={"modes": [mode]}), config.max_len,
                                                config.seed, device)[mode]
    from tunelens.routing import train as caps_train

    _, eval_stories = caps_train.load_stories(config)
    caps_settings = plan.eval or config.eval
    return lambda mode: caps_train.evaluate_modes(model, tokenizer, eval_stories,
                                                  caps_settings.model_copy(update={"modes": [mode]}),
                                                  config.max_len, config.seed, device)[mode]


def describe(values: dict[str, Any]) -> str:
    """One line of a mode's results, for either study."""
    from tunelens.routing.mbpp import describe_mbpp_mode
    from tunelens.routing.train import describe_caps_mode

    return describe_caps_mode(values) if "caps_rate" in values else describe_mbpp_mode(values)
