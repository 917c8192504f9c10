"""Top-level LM commands: `tunelens models` and `tunelens pretrain tiny-stories`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tunelens.config import UsageError

PRETRAINABLE = ("tiny-stories",)


def models_command() -> None:
    """The model aliases: alias, hub id, family, size, note (tab-separated when not on a terminal)."""
    from tunelens.lm.aliases import MODEL_ALIASES
    from tunelens.runs import is_interactive

    if not is_interactive():
        for alias, entry in MODEL_ALIASES.items():
            typer.echo(f"{alias}\t{entry.hub_id}\t{entry.family}\t{entry.n_params}\t{entry.note}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("alias", "hub id", "family", "size", "note")
    for alias, entry in MODEL_ALIASES.items():
        table.add_row(alias, entry.hub_id, entry.family, entry.n_params, entry.note)
    Console().print(table)


def pretrain_command(
    name: Annotated[str, typer.Argument(help="What to pretrain: tiny-stories.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="HF model directory (default: the user cache).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML of TinyStoriesConfig fields.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override: key=value (repeatable).")] = None,
) -> None:
    """Pretrain a tiny base LM on the synthetic story corpus and save it as a Hugging Face directory."""
    from tunelens.config import load_config
    from tunelens.lm.pretrain import TinyStoriesConfig, cached_model_dir, pretrain, read_summary
    from tunelens.runs import Run

    try:
        if name not in PRETRAINABLE:
            raise UsageError(f"unknown pretraining target '{name}' (known: {', '.join(PRETRAINABLE)})")
        resolved = load_config(TinyStoriesConfig, None, config, set_ or [])
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    target = out if out is not None else cached_model_dir(resolved)
    if out is None and (target / "pretrain_summary.json").is_file():
        typer.echo(f"{name}: already pretrained with this config: {target}")
        return
    run = Run(target, name)
    try:
        with run.progress(resolved.steps, "pretraining") as bar:
            def report(step: int, loss: float) -> None:
                bar.update(status=f"loss {loss:.3f}")
                if step % 50 == 0:
                    run.log_metrics(step, {"train/loss": loss})

            pretrain(resolved, target, run.log, report)
    finally:
        run.close()
    summary = read_summary(target)
    typer.echo(f"{name}: {summary['n_params'] / 1e6:.2f}M parameters, held-out loss {summary['eval_loss']:.3f} "
               f"(from {summary['eval_loss_initial']:.3f}), {summary['seconds']:.0f}s -> {target}")


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
    app.command("pretrain")(pretrain_command)
