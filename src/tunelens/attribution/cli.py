"""`tunelens attribution ...`: compare attribution results (heavy imports stay inside the commands)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tunelens.attribution.data import cli as data_cli
from tunelens.config import UsageError

app = typer.Typer(no_args_is_help=True, help="Training-data attribution on the hops benchmark.")
app.add_typer(data_cli.app, name="data")

DEFAULT_METRICS = ("precision@10", "map", "roc_auc", "own_share@10", "base_share@10", "seconds")


def load_result(path: Path) -> dict[str, dict[str, float]]:
    """Method -> metrics from a hops-attribute run directory or its summary.json, or computed from a ranked JSONL
    file (tunelens' or the original project's format: one query per function, its `<letter>_<method>_score`)."""
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise UsageError(f"result not found: {path}")
    if path.suffix == ".jsonl":
        return ranked_file_metrics(path)
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("methods"), dict):
        raise UsageError(f"{path}: not a hops-attribute summary (no 'methods')")
    return summary["methods"]


def ranked_file_metrics(path: Path) -> dict[str, dict[str, float]]:
    """Metrics of every method in a ranked file, each query function's score column taken as one query."""
    import re

    import torch

    from tunelens.attribution.attribute import masks
    from tunelens.attribution.corpus import Query, functions_of, parse_document, wrapper_letter
    from tunelens.attribution.metrics import retrieval_metrics
    from tunelens.lm.examples import read_jsonl

    records = [record for _, record in read_jsonl(path, "ranked documents")]
    if any("original_index" not in r for r in records):
        raise UsageError(f"{path}: a ranked file needs 'original_index' on every line")
    records.sort(key=lambda r: r["original_index"])
    documents = [parse_document(r, f"{path}:{r['original_index']}", i) for i, r in enumerate(records)]
    functions = functions_of(documents)
    letters = {wrapper_letter(f.token): f.token for f in functions}
    columns: dict[str, dict[str, str]] = {}
    for key in records[0]:
        match = re.fullmatch(r"([a-z]+)_(.+)_score", key)
        if match and match.group(1) in letters:
            columns.setdefault(match.group(2), {})[letters[match.group(1)]] = key
    if not columns:
        raise UsageError(f"{path}: no '<letter>_<method>_score' columns")
    out = {}
    for method, by_func in columns.items():
        funcs = list(by_func)
        scores = torch.tensor([[float(r[by_func[f]]) for r in records] for f in funcs])
        queries = [Query(f, 0, "", 0, 1) for f in funcs]
        m = masks(documents, queries, functions, role_match=False)
        wrappers = {f.token for f in functions if f.depth > 0}
        shares = {"own": m["own"], "base": m["base"]} if all(f in wrappers for f in funcs) else {"own": m["own"]}
        out[method] = retrieval_metrics(scores, m["relevant"], **shares)
    return out


@app.command("compare")
def compare_command(
    results: Annotated[list[Path], typer.Argument(help="hops-attribute run directories, summary.json files or "
                                                  "ranked JSONL files.")],
    metrics: Annotated[Optional[list[str]], typer.Option("--metric", help="Metric column (repeatable; default: "
                                                         f"{', '.join(DEFAULT_METRICS)}).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Put several attribution results side by side: one row per (result, method)."""
    from rich.console import Console
    from rich.table import Table

    try:
        loaded = {str(path): load_result(path) for path in results}
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(loaded, indent=1))
        return
    columns = list(metrics or DEFAULT_METRICS)
    table = Table(title="attribution results")
    for header in ("result", "method", *columns):
        table.add_column(header)
    for source, methods in loaded.items():
        for method, values in methods.items():
            table.add_row(source, method, *[_fmt(values.get(c)) for c in columns])
    Console(width=200).print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


__all__ = ["app", "load_result", "ranked_file_metrics"]
