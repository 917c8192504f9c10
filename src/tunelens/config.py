"""Experiment configs: pydantic models that reject unknown keys, loaded from YAML, overridable from the CLI.

Every user-facing problem with a config (unreadable file, unknown key, wrong type, bad `--set`) raises
`UsageError` with one line naming the key or file, which the CLI turns into exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, ValidationError


class UsageError(Exception):
    """A problem with the user's input (config, file, name). The CLI prints it as one line, exit 2."""


class TunelensConfig(BaseModel):
    """Base of every experiment config: frozen, unknown keys rejected, seed and device on every run."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    seed: NonNegativeInt = Field(0, description="Seed for every random draw of the run.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where tensors live; auto = cuda if present.")


class Schedule(BaseModel):
    """Learning-rate schedule: linear warm-up from 0, then constant, linear or cosine decay to final_frac."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["constant", "linear", "cosine"] = Field("constant", description="Shape after warm-up.")
    warmup_frac: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of steps spent warming up from 0.")
    final_frac: NonNegativeFloat = Field(0.0, description="Value at the last step as a fraction of the peak.")


# ----------------------------------------------------------------------------------------------- loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"unreadable YAML in {path}{where}: {getattr(err, 'problem', err)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: expected a mapping of config keys at the top level, got {type(loaded).__name__}")
    return loaded


def parse_value(text: str) -> Any:
    """Typed value of a `--set` right-hand side: int, float (1e-3 included), bool, null, list, or string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, list):
        return [parse_value(item) if isinstance(item, str) else item for item in value]
    return value


def apply_overrides(raw: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `key.path=value` applied (nested dicts created as needed)."""
    result = _deep_copy(raw)
    for assignment in assignments:
        if "=" not in assignment:
            raise UsageError(f"--set expects key.path=value, got '{assignment}'")
        key_path, value_text = assignment.split("=", 1)
        keys = key_path.strip().split(".")
        if not all(keys):
            raise UsageError(f"--set has an empty key in '{assignment}'")
        set_path(result, keys, parse_value(value_text.strip()))
    return result


def set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge: mappings merge key by key, anything else in `update` replaces."""
    result = _deep_copy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = _deep_copy(value)
    return result


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def validate_config(config_cls: type[TunelensConfig], raw: dict[str, Any], source: str = "config") -> TunelensConfig:
    """Build the config; the first validation problem becomes one line naming the key."""
    try:
        return config_cls.model_validate(raw)
    except ValidationError as err:
        raise UsageError(describe_validation_error(err, source)) from None


def describe_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{key}'"
    if first["type"] == "missing":
        return f"{source}: missing config key '{key}'"
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f", got {got!r}"
    more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    return f"{source}: bad value for '{key}': {first['msg']}{got_text}{more}"


def load_config(
    config_cls: type[TunelensConfig],
    defaults_path: Path | None,
    config_file: str | Path | None = None,
    assignments: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> TunelensConfig:
    """Defaults YAML, then the user's YAML merged over it, then `--set`s, then `extra` (e.g. --seed)."""
    raw: dict[str, Any] = read_yaml(defaults_path) if defaults_path is not None else {}
    source = str(defaults_path) if defaults_path is not None else "config"
    if config_file is not None:
        raw = merge(raw, read_yaml(config_file))
        source = str(config_file)
    if assignments:
        raw = apply_overrides(raw, assignments)
        source = "--set"
    if extra:
        raw = merge(raw, extra)
    return validate_config(config_cls, raw, source)


def config_to_dict(config: BaseModel) -> dict[str, Any]:
    return config.model_dump(mode="json")


def config_hash(config: BaseModel | dict[str, Any], n_chars: int = 12) -> str:
    """Stable short hash of a config, used to cache what a config deterministically produces."""
    import hashlib
    import json

    payload = config_to_dict(config) if isinstance(config, BaseModel) else config
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:n_chars]


__all__ = [
    "Schedule",
    "TunelensConfig",
    "UsageError",
    "apply_overrides",
    "config_hash",
    "load_config",
    "merge",
    "parse_value",
    "read_yaml",
    "validate_config",
]
