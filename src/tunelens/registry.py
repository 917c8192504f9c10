"""Named experiments: name -> (study, config class, default YAML, run function, one-line description).

Config classes and run functions are given as `module:attribute` strings so that `tunelens list` and
config errors do not pay for importing torch-heavy study code.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelens.config import TunelensConfig, UsageError, load_config

RunFunction = Callable[[Any, Any], dict[str, Any]]


def configs_dir() -> Path:
    """Default YAMLs: `configs/` beside `src/` in a checkout, `tunelens/configs` in an installed wheel."""
    packaged = Path(__file__).parent / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


def _resolve(dotted: str) -> Any:
    module_name, attribute = dotted.split(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class Experiment:
    name: str
    study: str
    config: str  # "module:ConfigClass"
    run: str  # "module:function" taking (config, Run) and returning the summary dict
    summary: str
    preflight: str | None = None  # "module:function" taking the config: checks inputs before a run directory exists

    def check(self, config: TunelensConfig) -> None:
        """Raise a UsageError for bad inputs that the config alone cannot see (a pair of checkpoints that do not
        match, say), before anything is written."""
        if self.preflight is not None:
            _resolve(self.preflight)(config)

    @property
    def defaults_path(self) -> Path:
        return configs_dir() / f"{self.name}.yaml"

    def config_class(self) -> type[TunelensConfig]:
        return _resolve(self.config)

    def run_function(self) -> RunFunction:
        return _resolve(self.run)

    def load_config(self, config_file: str | Path | None = None, assignments: list[str] | None = None,
                    extra: dict[str, Any] | None = None) -> TunelensConfig:
        return load_config(self.config_class(), self.defaults_path, config_file, assignments, extra)


def _spd(name: str, summary: str) -> Experiment:
    return Experiment(name, "spd", "tunelens.spd.configs:SpdConfig", "tunelens.spd.train:run", summary)


def _caps(name: str, summary: str) -> Experiment:
    return Experiment(name, "routing", "tunelens.routing.train:CapsConfig", "tunelens.routing.train:run", summary)


def _caps_experiments() -> list[Experiment]:
    return [
        _caps("caps", "Gradient routing on ALL-CAPS stories: dual MLP adapters, labeled-bad and labeled-good steps"),
        _caps("caps-norouting", "The control of caps: same data and adapters, no labels (every row trains both)"),
        _caps("caps-dispersed", "caps with labeled-good steps on 20 % of clean stories (bad adapter ablated)"),
        _caps("caps-postablation", "caps, then the good adapter alone fine-tuned on known-good stories, bad ablated"),
        _caps("caps-frontload", "caps with steps on labeled-bad stories alone first"),
        _caps("caps-lora", "caps with dual LoRA adapters on the 7 projections instead of MLP adapters"),
        _caps("caps-finetune", "caps without a good adapter: the last layers' own weights are good, beside a bad "
              "MLP adapter"),
    ]


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in [
        _spd("tms_5-2", "SPD of a toy model of superposition, 5 features in 2 dimensions"),
        _spd("tms_5-2-id", "SPD of TMS 5-2 with a frozen 2x2 identity hidden layer"),
        _spd("tms_40-10", "SPD of a toy model of superposition, 40 features in 10 dimensions"),
        _spd("tms_40-10-id", "SPD of TMS 40-10 with a frozen 10x10 identity hidden layer"),
        _spd("resid_mlp1", "SPD of a 1-layer residual MLP computing 100 ReLUs in 50 neurons"),
        _spd("resid_mlp2", "SPD of a 2-layer residual MLP (25 neurons per layer, 100 features)"),
        _spd("resid_mlp3", "SPD of a 3-layer residual MLP (17 neurons per layer, 102 features)"),
        _spd("lm_emb", "SPD of the token embedding of the tiny story language model (KL loss)"),
        _spd("lm_mlp", "SPD of one MLP block's projections of the tiny story language model (KL loss)"),
        Experiment("tiny-stories", "lm", "tunelens.lm.pretrain:TinyStoriesConfig", "tunelens.lm.pretrain:run",
                   "Pretrain the tiny base language model (tokenizer and model) on the synthetic story corpus"),
        Experiment("tiny-code", "routing", "tunelens.routing.code_model:TinyCodeConfig",
                   "tunelens.routing.code_model:run",
                   "Pretrain the tiny code model (tokenizer and model) on the standard library and MBPP solutions"),
        Experiment("lm-finetune", "lm", "tunelens.lm.finetune:FinetuneConfig", "tunelens.lm.finetune:run",
                   "Fine-tune a causal LM (full or LoRA) on prompt/completion examples; held-out loss before/after"),
        Experiment("output-control", "control", "tunelens.control.evaluate:OutputControlConfig",
                   "tunelens.control.evaluate:run",
                   "Output control (SAD): asked-for next-token distributions, SAD and aligned scoring, references"),
        Experiment("output-control-finetune", "control", "tunelens.control.finetune:OutputControlFinetuneConfig",
                   "tunelens.control.finetune:run",
                   "LoRA fine-tuning for output control with a TVD loss at the answer position; held-out before/after"),
        *_caps_experiments(),
        Experiment("mbpp", "routing", "tunelens.routing.mbpp:MbppConfig", "tunelens.routing.mbpp:run",
                   "Gradient routing against reward hacking on MBPP: hacks routed to a forget adapter, sandboxed "
                   "rates"),
        Experiment("mbpp-random", "routing", "tunelens.routing.mbpp:MbppConfig", "tunelens.routing.mbpp:run",
                   "The control of mbpp: the same numbers of forget/retain labels drawn at random"),
        Experiment("hops-train", "attribution", "tunelens.attribution.train:HopsTrainConfig",
                   "tunelens.attribution.train:run",
                   "Hops benchmark checkpoint pair: add the function tokens, fine-tune, logit-evaluate checkpoints"),
        Experiment("hops-attribute", "attribution", "tunelens.attribution.attribute:HopsAttributeConfig",
                   "tunelens.attribution.attribute:run",
                   "Rank the hops training documents for each query with every method; retrieval metrics",
                   preflight="tunelens.attribution.attribute:preflight"),
    ]
}


def get_experiment(name: str) -> Experiment:
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    close = difflib.get_close_matches(name, EXPERIMENTS, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(EXPERIMENTS)}"
    raise UsageError(f"unknown experiment '{name}'{hint}")
