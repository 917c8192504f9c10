"""The `tunelens` command: list, run, sweep, report, plus one sub-command group per study that needs one.

User errors (unknown experiment, bad config key, missing file) print one line and exit 2; a failure during
a run prints its cause and exits 1, with the traceback in the run's log.txt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tunelens.config import UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Study what training puts into a network and where.")

EXIT_USAGE = 2
EXIT_FAILURE = 1


def fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command("list")
def list_experiments() -> None:
    """One line per registered experiment: name, study, description (tab-separated)."""
    from tunelens.registry import EXPERIMENTS

    for experiment in EXPERIMENTS.values():
        typer.echo(f"{experiment.name}\t{experiment.study}\t{experiment.summary}")


@app.command("run")
def run_command(
    names: Annotated[list[str], typer.Argument(help="Registered experiment name(s); see `tunelens list`.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (DIR/NAME with several names).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML merged over the defaults.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override: key.path=value (repeatable).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed (overrides the config's).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda.")] = None,
    wandb: Annotated[Optional[str], typer.Option("--wandb", help="Also log to this W&B project.")] = None,
) -> None:
    """Run experiments; each writes config.yaml, metrics.jsonl, summary.json, figures/ and log.txt."""
    from tunelens.distributed import is_writer
    from tunelens.registry import get_experiment
    from tunelens.runs import default_run_dir, run_experiment

    extra: dict[str, object] = {}
    if seed is not None:
        extra["seed"] = seed
    if device is not None:
        if device not in ("auto", "cpu", "cuda"):
            fail(f"--device must be auto, cpu or cuda, got '{device}'")
        extra["device"] = device
    try:
        # Resolve every name and config before running anything, so a typo fails in a second, not an hour.
        planned = []
        for name in names:
            experiment = get_experiment(name)
            resolved = experiment.load_config(config, set_ or [], extra)
            experiment.check(resolved)
            if out is None:
                run_dir = default_run_dir(name)
            else:
                run_dir = out if len(names) == 1 else out / name
            planned.append((experiment, resolved, run_dir))
        for experiment, resolved, run_dir in planned:
            summary = run_experiment(experiment, resolved, run_dir, wandb_project=wandb)
            if is_writer():  # under torchrun, once
                typer.echo(f"{experiment.name}: {run_dir}  ({_headline(summary)})")
    except UsageError as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted", EXIT_FAILURE)
    except Exception as err:  # noqa: BLE001 - the CLI's job is to turn the cause into one line
        fail(f"run failed: {type(err).__name__}: {err} (traceback in the run's log.txt)", EXIT_FAILURE)


def _headline(summary: dict) -> str:
    keys = [k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)][:6]
    return ", ".join(f"{k}={summary[k]:.4g}" for k in keys)


@app.command("sweep")
def sweep_command(
    name: Annotated[str, typer.Argument(help="Registered experiment to sweep.")],
    grid: Annotated[Path, typer.Option("--grid", help="Grid YAML: global and per-experiment {values: [...]}.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Sweep directory.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Points run at once.")] = 1,
    launcher: Annotated[str, typer.Option("--launcher", help="local or slurm (through submitit).")] = "local",
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML merged over the defaults.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override for every point.")] = None,
    slurm_partition: Annotated[Optional[str], typer.Option("--slurm-partition")] = None,
    slurm_minutes: Annotated[int, typer.Option("--slurm-minutes", min=1)] = 60,
) -> None:
    """Run every point of a parameter grid; writes DIR/sweep.csv with parameters and summary metrics."""
    from tunelens.runs import default_run_dir
    from tunelens.sweep import run_sweep

    if launcher not in ("local", "slurm"):
        fail(f"--launcher must be local or slurm, got '{launcher}'")
    sweep_dir = out if out is not None else default_run_dir(f"sweep-{name}")
    try:
        csv_path = run_sweep(name, grid, sweep_dir, jobs=jobs, launcher=launcher, config_file=config,
                             assignments=set_ or [], slurm_partition=slurm_partition, slurm_minutes=slurm_minutes)
    except UsageError as err:
        fail(str(err))
    except Exception as err:  # noqa: BLE001
        fail(f"sweep failed: {type(err).__name__}: {err}", EXIT_FAILURE)
    typer.echo(f"sweep: {csv_path}")


@app.command("report")
def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories holding summary.json.")],
) -> None:
    """Print the summaries of finished runs side by side."""
    from rich.console import Console
    from rich.table import Table

    from tunelens.sweep import flatten

    rows = []
    for run_dir in run_dirs:
        path = run_dir / "summary.json"
        if not path.is_file():
            fail(f"no summary.json in {run_dir} (unfinished or not a run directory)")
        try:
            rows.append((run_dir, flatten(json.loads(path.read_text()))))
        except json.JSONDecodeError as err:
            fail(f"{path}: not valid JSON ({err})")
    keys = sorted({k for _, row in rows for k in row})
    table = Table("metric", *[str(d) for d, _ in rows])
    for key in keys:
        table.add_row(key, *[_fmt(row.get(key)) for _, row in rows])
    Console().print(table)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _add_study_commands() -> None:
    """Study command groups; each module keeps its heavy imports inside its commands."""
    from tunelens.attribution import cli as attribution_cli
    from tunelens.control import cli as control_cli
    from tunelens.lm import cli as lm_cli
    from tunelens.routing import cli as routing_cli

    lm_cli.register(app)
    app.add_typer(routing_cli.app, name="routing")
    app.add_typer(control_cli.app, name="control")
    app.add_typer(attribution_cli.app, name="attribution")


_add_study_commands()


def main() -> None:
    try:
        app()
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
