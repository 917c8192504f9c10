"""Parameter sweeps: a grid YAML expanded to its full product, run locally in worker processes or on SLURM.

Grid format (every leaf is `{values: [...]}`; an experiment's block is merged over `global`):

    global:
      seed: {values: [0, 1]}
    tms_5-2:
      loss:
        importance_minimality: {values: [1.0e-3, 3.0e-3]}

Every point is validated before the first one runs; each runs in DIR/point-NNN, and DIR/sweep.csv gets
one row per point: its parameters, its status and its summary metrics (nested keys joined by dots).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tunelens.config import UsageError, read_yaml, set_path
from tunelens.registry import EXPERIMENTS, get_experiment
from tunelens.runs import atomic_write_text


def grid_leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, list[Any]]]:
    """(dotted key, values) for every `{values: [...]}` leaf."""
    for key, node in tree.items():
        path = f"{prefix}{key}"
        if not isinstance(node, dict):
            raise UsageError(f"grid key '{path}': expected {{values: [...]}} or a nested mapping, got {node!r}")
        if "values" in node:
            if set(node) != {"values"} or not isinstance(node["values"], list) or not node["values"]:
                raise UsageError(f"grid key '{path}': expected exactly {{values: [non-empty list]}}")
            yield path, node["values"]
        else:
            yield from grid_leaves(node, f"{path}.")


def expand_grid(grid: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """All points for experiment `name`: dicts of dotted key -> value, experiment block overriding global."""
    unknown = [key for key in grid if key != "global" and key not in EXPERIMENTS]
    if unknown:
        raise UsageError(f"grid block '{unknown[0]}' is neither 'global' nor a registered experiment")
    params = dict(grid_leaves(grid.get("global") or {}))
    params.update(dict(grid_leaves(grid.get(name) or {})))
    if not params:
        raise UsageError(f"grid has no parameters for '{name}' (use a 'global' or '{name}' block)")
    keys = list(params)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(params[k] for k in keys))]


def nest(point: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in point.items():
        set_path(tree, key.split("."), value)
    return tree


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            flat[f"{prefix}{key}"] = value
    return flat


def run_point(name: str, config_json: str, run_dir: str, n_threads: int) -> dict[str, Any]:
    """Worker entry point (top level so it pickles): run one point quietly, return its summary."""
    import torch

    from tunelens.runs import run_experiment

    torch.set_num_threads(n_threads)
    experiment = get_experiment(name)
    config = experiment.config_class().model_validate(json.loads(config_json))
    return run_experiment(experiment, config, run_dir, quiet=True)


def run_sweep(name: str, grid_path: str | Path, sweep_dir: str | Path, jobs: int = 1, launcher: str = "local",
              config_file: str | Path | None = None, assignments: list[str] | None = None,
              slurm_partition: str | None = None, slurm_minutes: int = 60,
              submitit_cluster: str | None = None) -> Path:
    experiment = get_experiment(name)
    points = expand_grid(read_yaml(grid_path), name)
    configs = [experiment.load_config(config_file, assignments or [], nest(point)) for point in points]
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    run_dirs = [str(sweep_dir / f"point-{i:03d}") for i in range(len(points))]
    payloads = [config.model_dump_json() for config in configs]
    n_threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"sweep {name}: {len(points)} points, {jobs} at a time ({launcher}) -> {sweep_dir}", flush=True)
    if launcher == "local":
        outcomes = _run_local(name, payloads, run_dirs, jobs, n_threads)
    elif launcher == "slurm":
        outcomes = _run_submitit(name, payloads, run_dirs, jobs, sweep_dir, slurm_partition, slurm_minutes,
                                 submitit_cluster)
    else:
        raise UsageError(f"unknown launcher '{launcher}' (expected local or slurm)")
    return write_sweep_csv(sweep_dir / "sweep.csv", points, run_dirs, outcomes)


def _run_local(name: str, payloads: list[str], run_dirs: list[str], jobs: int, n_threads: int) -> list[Any]:
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_point, name, payload, run_dir, n_threads)
                   for payload, run_dir in zip(payloads, run_dirs)]
        outcomes = []
        for i, future in enumerate(futures):
            try:
                outcomes.append(future.result())
            except Exception as err:  # noqa: BLE001 - one failed point is reported in its row, not fatal
                outcomes.append(err)
            print(f"  point {i + 1}/{len(futures)}: {_status(outcomes[-1])}", flush=True)
    return outcomes


def _run_submitit(name: str, payloads: list[str], run_dirs: list[str], jobs: int, sweep_dir: Path,
                  partition: str | None, minutes: int, cluster: str | None) -> list[Any]:
    import submitit

    executor = submitit.AutoExecutor(folder=sweep_dir / "submitit", cluster=cluster)
    parameters: dict[str, Any] = {"timeout_min": minutes, "slurm_array_parallelism": jobs, "cpus_per_task": 2}
    if partition:
        parameters["slurm_partition"] = partition
    executor.update_parameters(**{k: v for k, v in parameters.items()
                                  if cluster != "local" or not k.startswith("slurm_")})
    submitted = executor.map_array(run_point, [name] * len(payloads), payloads, run_dirs, [1] * len(payloads))
    outcomes = []
    for job in submitted:
        try:
            outcomes.append(job.result())
        except Exception as err:  # noqa: BLE001
            outcomes.append(err)
    return outcomes


def _status(outcome: Any) -> str:
    return "ok" if isinstance(outcome, dict) else f"failed: {type(outcome).__name__}: {outcome}".replace("\n", " ")


def write_sweep_csv(path: Path, points: list[dict[str, Any]], run_dirs: list[str], outcomes: list[Any]) -> Path:
    param_keys = list(points[0])
    rows = []
    for point, run_dir, outcome in zip(points, run_dirs, outcomes):
        metrics = flatten(outcome) if isinstance(outcome, dict) else {}
        rows.append({"run_dir": run_dir, **point, "status": _status(outcome), **metrics})
    metric_keys = sorted({k for row in rows for k in row} - {"run_dir", "status", *param_keys})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["run_dir", *param_keys, "status", *metric_keys])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path
