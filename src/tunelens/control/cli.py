"""`tunelens control ...`: eval, finetune and deviation (heavy imports stay inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tunelens.config import UsageError

app = typer.Typer(no_args_is_help=True, help="Output-control study (SAD anti-imitation).")

OutOption = Annotated[Optional[Path], typer.Option("--out", help="Run directory (default runs/NAME/<UTC time>).")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="Override: key.path=value (repeatable).")]
DeviceOption = Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda.")]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="YAML merged over the defaults.")]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run_registered(name: str, out: Optional[Path], config_file: Optional[Path], assignments: list[str],
                    extra: dict[str, Any]) -> None:
    from tunelens.registry import get_experiment
    from tunelens.runs import default_run_dir, run_experiment

    try:
        experiment = get_experiment(name)
        config = experiment.load_config(config_file, assignments, extra)
        run_dir = out if out is not None else default_run_dir(name)
        run_experiment(experiment, config, run_dir)
    except UsageError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        _fail("interrupted", 1)
    except Exception as err:  # noqa: BLE001 - the CLI's job is to turn the cause into one line
        _fail(f"run failed: {type(err).__name__}: {err} (traceback in the run's log.txt)", 1)
    typer.echo(f"{name}: {run_dir}")


def _extra(device: Optional[str], **values: Any) -> dict[str, Any]:
    extra = {k: v for k, v in values.items() if v is not None}
    if device is not None:
        if device not in ("auto", "cpu", "cuda"):
            _fail(f"--device must be auto, cpu or cuda, got '{device}'")
        extra["device"] = device
    return extra


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def eval_command(
    ctx: typer.Context,
    models: Annotated[list[str], typer.Option("--models", help="Models: tiny-stories, aliases, hub ids or "
                                              "directories, listed after the option (--models A B).")],
    num_examples: Annotated[Optional[int], typer.Option("--num-examples", min=1, help="Word pairs / seeds per case "
                                                         "(10 samples each).")] = None,
    adapter: Annotated[Optional[Path], typer.Option("--adapter", help="peft LoRA adapter directory.")] = None,
    out: OutOption = None, config: ConfigOption = None, set_: SetOption = None, device: DeviceOption = None,
) -> None:
    """Evaluate models on output control (the experiment `output-control`)."""
    unknown = [arg for arg in ctx.args if arg.startswith("-")]
    if unknown:
        _fail(f"no such option: {unknown[0]}")
    extra = _extra(device, models=[*models, *ctx.args], num_examples=num_examples,
                   adapter=None if adapter is None else str(adapter))
    _run_registered("output-control", out, config, set_ or [], extra)


@app.command("finetune")
def finetune_command(
    model: Annotated[Optional[str], typer.Option("--model", help="Base model (default: tiny-stories).")] = None,
    out: OutOption = None, config: ConfigOption = None, set_: SetOption = None, device: DeviceOption = None,
) -> None:
    """LoRA fine-tuning with a TVD loss, held-out evaluation before and after (`output-control-finetune`)."""
    _run_registered("output-control-finetune", out, config, set_ or [], _extra(device, model=model))


@app.command("deviation")
def deviation_command(
    model: Annotated[str, typer.Option("--model", help="Model under test.")],
    reference: Annotated[str, typer.Option("--reference", help="Base model whose top-5 tokens count as imitation.")],
    out: OutOption = None, config: ConfigOption = None, set_: SetOption = None, device: DeviceOption = None,
) -> None:
    """Base-model deviation: continue a passage or pattern, then deviate inside a window."""
    from tunelens.config import load_config
    from tunelens.control.deviation import DeviationConfig
    from tunelens.registry import Experiment
    from tunelens.runs import default_run_dir, run_experiment

    name = "output-control-deviation"
    try:
        resolved = load_config(DeviationConfig, None, config, set_ or [],
                               _extra(device, model=model, reference=reference))
        run_dir = out if out is not None else default_run_dir(name)
        experiment = Experiment(name, "control", "tunelens.control.deviation:DeviationConfig",
                                "tunelens.control.deviation:run_deviation",
                                "Base-model deviation: continue a text, then leave it inside a window")
        summary = run_experiment(experiment, resolved, run_dir)
    except UsageError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        _fail("interrupted", 1)
    except Exception as err:  # noqa: BLE001
        _fail(f"run failed: {type(err).__name__}: {err} (traceback in the run's log.txt)", 1)
    typer.echo(f"{name}: {run_dir}  (pass rate {summary['pass_rate']:.3f}, {summary['n_pass']}/{summary['n_items']})")
