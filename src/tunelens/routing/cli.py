"""`tunelens routing ...` commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from tunelens.config import UsageError

app = typer.Typer(no_args_is_help=True, help="Gradient routing study.")


@app.command("check-solutions")
def check_solutions_command(
    out: Annotated[Path, typer.Option("--out", help="Results JSONL, one line per input record.")],
    path: Annotated[Optional[Path], typer.Argument(
        help="JSONL: task_id, code, test_list[, test_imports, test_setup_code]. Default: the MBPP problems shipped "
             "with tunelens (974 reference solutions).")] = None,
    workers: Annotated[Optional[int],
                       typer.Option("--workers", min=1, help="Programs at once (default: cores).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Wall-clock seconds per program.")] = 10.0,
) -> None:
    """Run each solution in the sandbox with its first test and with all tests; flag reward hacks."""
    from rich.progress import Progress

    from tunelens.data import MBPP
    from tunelens.routing.mbpp_check import check_solutions, read_records
    from tunelens.runs import atomic_write_text, is_interactive
    from tunelens.sandbox import Limits, Sandbox

    try:
        records = read_records(MBPP if path is None else path)
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    limits = Limits(timeout_s=timeout)
    sandbox = Sandbox(limits, workers=workers)
    start = time.perf_counter()
    with Progress(disable=not is_interactive(), transient=True) as progress:
        task = progress.add_task("checking", total=len(records))
        rows = check_solutions(records, sandbox, lambda n: progress.advance(task, n))
    seconds = time.perf_counter() - start
    atomic_write_text(out, "".join(json.dumps(row) + "\n" for row in rows))
    keys = ("first_test", "all_tests", "reward_hack", "timed_out")
    counts = {key: sum(bool(row[key]) for row in rows) for key in keys}
    typer.echo(f"{len(rows)} solutions: first test {counts['first_test']}, all tests {counts['all_tests']}, "
               f"reward hacks {counts['reward_hack']}, timed out {counts['timed_out']}; {seconds:.1f}s "
               f"({2 * len(rows) / seconds:.1f} programs/s, {sandbox.workers} workers) -> {out}")


def _fail(err: UsageError) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(2)


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A caps run directory (with adapters/).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the merged transformers model.")],
) -> None:
    """The good LoRA adapter merged into the base weights, the bad one dropped: a plain transformers model
    with the logits of the run's bad_ablated mode."""
    from tunelens.routing.export import export_run

    try:
        saved = export_run(run_dir, out)
    except UsageError as err:
        raise _fail(err) from None
    typer.echo(f"exported {run_dir} (good merged, bad dropped) -> {saved}")


@app.command("eval")
def eval_command(
    plan: Annotated[Path, typer.Argument(
        help="EVAL.yaml: runs (name, run_dir, modes, label), cache, figure; caps runs or mbpp runs.")],
    force: Annotated[bool, typer.Option("--force", help="Recompute every entry, ignoring the cache.")] = False,
) -> None:
    """Evaluate runs x modes (cached in one JSON file keyed by run and mode) and draw one comparison figure."""
    from tunelens.routing.compare import describe, evaluate_plan

    try:
        results = evaluate_plan(plan, force=force, log=typer.echo)
    except UsageError as err:
        raise _fail(err) from None
    for name, modes in results.items():
        for mode, values in modes.items():
            typer.echo(f"{name:>16} {mode:>14}: {describe(values)}")


@app.command("orthogonality")
def orthogonality_command(
    run_dir: Annotated[Path, typer.Argument(help="A caps run directory (with adapters/).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Figure path (default RUN_DIR/figures/"
                                                "orthogonality.png); the table goes beside it as JSON.")] = None,
) -> None:
    """Principal angles between the good and bad branches' subspaces per module, and the cosine of their
    flattened updates: a table and a figure."""
    from tunelens.routing.export import load_routed
    from tunelens.routing.figures import plot_orthogonality
    from tunelens.routing.orthogonality import orthogonality_table
    from tunelens.runs import write_json

    try:
        model, settings = load_routed(run_dir)
    except UsageError as err:
        raise _fail(err) from None
    rows = orthogonality_table(model)
    if not rows:
        raise _fail(UsageError(f"{run_dir}: no module has both a good and a bad branch"))
    figure = out or Path(run_dir) / "figures" / "orthogonality.png"
    plot_orthogonality(rows, figure, title=f"{Path(run_dir).name}: good vs bad {settings.kind} branches")
    write_json(figure.with_suffix(".json"), rows)
    typer.echo(f"{'module':<40} {'min angle':>9} {'mean angle':>10} {'update cos':>10}")
    for row in rows:
        typer.echo(f"{row['module']:<40} {row['min_angle_deg']:>9.2f} {row['mean_angle_deg']:>10.2f} "
                   f"{row['update_cosine']:>10.4f}")
    typer.echo(f"-> {figure}")
