"""Top-level LM commands: `tunelens models` and `tunelens pretrain tiny-stories`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tunelens.config import UsageError


def models_command() -> None:
    """The model aliases: alias, hub id, family, size, note (tab-separated when not on a terminal)."""
    from tunelens.lm.aliases import MODEL_ALIASES
    from tunelens.runs import is_interactive

    rows = [(alias, e.hub_id, e.family, e.n_params, e.note) for alias, e in MODEL_ALIASES.items()]
    if not is_interactive():
        for row in rows:
            typer.echo("\t".join(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("alias", "hub id", "family", "size", "note")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def pretrain_command(
    name: Annotated[str, typer.Argument(
        help="What to pretrain: tiny-stories, tiny-stories-mixedcase, tiny-stories-copy or tiny-code.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory, the model in DIR/model (default: "
                                                "the user cache).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML of TinyStoriesConfig fields.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override: key=value (repeatable).")] = None,
) -> None:
    """Pretrain a tiny base LM: on the synthetic story corpus (the experiment `tiny-stories`) or on Python source
    (`tiny-code`).

    Without --out the run goes to the cache that studies load "the tiny base model" from, and an existing
    model for the same config is reused.
    """
    from tunelens.lm import pretrain
    from tunelens.registry import get_experiment
    from tunelens.routing import code_model
    from tunelens.runs import run_experiment

    known = [*pretrain.TINY_MODELS, code_model.TINY_CODE]
    try:
        if name not in known:
            raise UsageError(f"unknown pretraining target '{name}' (known: {', '.join(known)})")
        experiment = get_experiment(code_model.TINY_CODE if name == code_model.TINY_CODE else "tiny-stories")
        variant = [f"{key}={value}" for key, value in pretrain.TINY_MODELS.get(name, {}).items()]
        resolved = experiment.load_config(config, variant + (set_ or []))
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    module = code_model if name == code_model.TINY_CODE else pretrain
    cached_dir = module.cached_model_dir(resolved)
    if out is None and module.is_pretrained(cached_dir):
        typer.echo(f"{name}: already pretrained with this config: {cached_dir}")
        return
    try:
        if out is None:
            model_dir = (code_model.tiny_code_model(resolved) if name == code_model.TINY_CODE
                         else pretrain.tiny_story_model(resolved))
        else:
            run_experiment(experiment, resolved, out)
            model_dir = out / "model"
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        raise typer.Exit(1) from None
    except Exception as err:  # noqa: BLE001 - the CLI's job is to turn the cause into one line
        typer.echo(f"error: pretraining failed: {type(err).__name__}: {err}", err=True)
        raise typer.Exit(1) from None
    summary = pretrain.read_summary(model_dir)
    typer.echo(f"{name}: {summary['n_params'] / 1e6:.2f}M parameters, held-out loss {summary['eval_loss']:.3f} "
               f"(from {summary['eval_loss_initial']:.3f}; train {summary['train_loss']:.3f}; on repeated halves "
               f"{summary.get('eval_repeat_loss', float('nan')):.3f}), "
               f"{summary['seconds']:.0f}s -> {model_dir}")
    for item in summary["samples"]:
        typer.echo(f"  {item['prompt']} >> {item['continuation']!r}")


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
    app.command("pretrain")(pretrain_command)
