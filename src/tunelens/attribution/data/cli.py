"""`tunelens attribution data ...`: audit and reshape hops corpora (heavy imports stay inside the commands)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tunelens.attribution.data.generate_cli import generate_command  # noqa: E402 - its heavy imports are inside
from tunelens.config import UsageError

app = typer.Typer(no_args_is_help=True, help="Generate, audit, order, combine, split and normalise hops corpora.")
app.command("generate")(generate_command)


def _run(action: Callable[[], Any]) -> Any:
    """Bad input (or an unwritable output) is one `error: ...` line on stderr and exit 2."""
    try:
        return action()
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except OSError as err:
        typer.echo(f"error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), err=True)
        raise typer.Exit(2) from None


@app.command("audit")
def audit_command(
    file: Annotated[Path, typer.Argument(help="A hops corpus (JSONL).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Run the original's checks on a corpus; exit 1 when a hard rule is broken."""
    from tunelens.attribution.data.audit import HARD_RULES, audit

    result = _run(lambda: audit(file))
    if as_json:
        typer.echo(json.dumps(result))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"audit of {file}")
        table.add_column("figure")
        table.add_column("value")
        for key in ("n_docs", "base_docs", "base_with_constant", "wrapper_docs", "wrapper_with_constant",
                    "wrapper_naming_target", "base_naming_wrapper", "own_token_missing", "unrelated_token",
                    "role_depth_mismatch", "wrapper_constant_mismatch", "reveals_held_out", "duplicate_texts",
                    "distinct_uids", "hard_violations"):
            table.add_row(key, str(result[key]))
        table.add_row("docs_per_function", " ".join(f"{k}:{v}" for k, v in result["docs_per_function"].items()))
        for depth, counts in result["types"].items():
            table.add_row(f"types (depth {depth})", " ".join(f"{k}:{v}" for k, v in counts.items()))
        console = Console(width=160)
        console.print(table)
        for v in result["violations"]:
            if v["rule"] in HARD_RULES:
                console.print(f"document {v['index']}: {v['rule']}: {v['detail']}", markup=False)
    if result["hard_violations"]:
        raise typer.Exit(1)


@app.command("order")
def order_command(
    file: Annotated[Path, typer.Argument(help="A hops corpus (JSONL).")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL file.")],
    pattern: Annotated[str, typer.Option("--pattern", help="A repeating cycle of letters (X = <XN>), 'released' "
                                         "(G J K L M N O P Q R twice, then F I H S T U V W X Y) or 'pairs' (each "
                                         "base, then its wrappers).")] = "released",
    shuffle: Annotated[bool, typer.Option("--shuffle", help="A random order instead of a pattern.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --shuffle.")] = 0,
    ascii_: Annotated[bool, typer.Option("--ascii", help="Escape non-ASCII characters (as 20hops.jsonl).")] = False,
) -> None:
    """Put a corpus in curriculum order (or shuffle it)."""
    from tunelens.attribution.data.ops import order, read_records, write_records

    chosen = "shuffle" if shuffle else (None if pattern == "pairs" else pattern)
    records = _run(lambda: order(read_records(file), chosen, seed))
    _run(lambda: write_records(out, records, ensure_ascii=ascii_))
    typer.echo(f"{len(records)} documents -> {out}")


@app.command("combine")
def combine_command(
    files: Annotated[list[Path], typer.Argument(help="Corpora (JSONL) to concatenate.")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL file.")],
    shuffle: Annotated[bool, typer.Option("--shuffle", help="Shuffle the result.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --shuffle.")] = 0,
    dedup: Annotated[bool, typer.Option("--dedup", help="Keep the first of every text (md5).")] = False,
    ascii_: Annotated[bool, typer.Option("--ascii", help="Escape non-ASCII characters.")] = False,
) -> None:
    """Concatenate corpora, optionally de-duplicated and shuffled."""
    from tunelens.attribution.data.ops import combine, write_records

    records = _run(lambda: combine(files, shuffle=shuffle, seed=seed, dedup=dedup))
    _run(lambda: write_records(out, records, ensure_ascii=ascii_))
    typer.echo(f"{len(records)} documents -> {out}")


@app.command("split")
def split_command(
    file: Annotated[Path, typer.Argument(help="A hops corpus (JSONL).")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder of the output files.")],
    by: Annotated[str, typer.Option("--by", help="What to split by (only 'depth').")] = "depth",
    ascii_: Annotated[bool, typer.Option("--ascii", help="Escape non-ASCII characters.")] = False,
) -> None:
    """Write one file per hop depth, `<name>_depth<d>.jsonl`."""
    from tunelens.attribution.data.ops import read_records, write_split

    if by != "depth":
        typer.echo(f"error: --by must be 'depth', got {by!r}", err=True)
        raise typer.Exit(2)
    paths = _run(lambda: write_split(read_records(file), out_dir, file.stem, ensure_ascii=ascii_))
    for path in paths:
        typer.echo(str(path))


@app.command("normalise-tokens")
def normalise_tokens_command(
    file: Annotated[Path, typer.Argument(help="A hops corpus (JSONL).")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL file.")],
    fields: Annotated[Optional[list[str]], typer.Option("--field", help="A field to normalise (repeatable; "
                                                        "default: text only, as 20hops_normal_toks.jsonl).")] = None,
) -> None:
    """Remove the angle brackets of function tokens (<GN> -> GN)."""
    from tunelens.attribution.data.ops import normalise_tokens, read_records, write_records

    records = _run(lambda: normalise_tokens(read_records(file), tuple(fields or ("text",))))
    _run(lambda: write_records(out, records))
    typer.echo(f"{len(records)} documents -> {out}")


__all__ = ["app"]
