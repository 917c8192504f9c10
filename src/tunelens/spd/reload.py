"""Reloading a finished SPD run (config, target, trained components) for analysis in a notebook or script."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from tunelens.config import UsageError, validate_config
from tunelens.runs import load_tensors
from tunelens.spd.component_model import ComponentModel
from tunelens.spd.configs import SpdConfig
from tunelens.spd.targets import Target, build_target
from tunelens.spd.train import build_component_model


def load_decomposition(run_dir: str | Path, device: str = "cpu") -> tuple[SpdConfig, Target, ComponentModel]:
    """Toy targets come back from the run's target.safetensors; language models, which runs do not copy, from
    their source."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UsageError(f"no config.yaml in {run_dir} (not a run directory)")
    raw = yaml.safe_load(config_path.read_text())
    if isinstance(raw, dict):
        raw.setdefault("tie_components", False)  # runs written before the option existed decomposed untied
    config = validate_config(SpdConfig, raw, str(config_path))
    target_path = run_dir / "target.safetensors"
    weights = load_tensors(target_path) if target_path.is_file() else None
    target = build_target(config.target, torch.device(device), lambda message: None, weights)
    model = build_component_model(config, target)
    state = {f"target.{k}": v for k, v in target.model.state_dict().items()}
    state.update(load_tensors(run_dir / "components.safetensors"))
    model.load_state_dict(state)
    return config, target, model
