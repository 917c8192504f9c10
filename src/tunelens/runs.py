"""Run directories, seeding, device choice, progress and logging shared by every study.

A run directory holds `config.yaml`, `summary.json`, `metrics.jsonl`, `figures/`, `*.safetensors`
and `log.txt`. Result files are written to a temporary file and renamed, so a run killed half-way never
leaves a truncated summary or checkpoint behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel

from tunelens.config import UsageError, config_to_dict

# ------------------------------------------------------------------------------------------ atomic writes


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp_file:
            tmp_file.write(payload)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def to_jsonable(value: Any) -> Any:
    """Tensors, numpy values and paths become plain JSON values; NaN/inf become null (strict JSON)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(payload), indent=2) + "\n")


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, save(contiguous, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UsageError(f"checkpoint not found: {path}")
    return load_file(str(path))


# ------------------------------------------------------------------------------------------- seed, device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' was asked for but no CUDA device is available (use --device cpu)")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"unknown device '{name}' (expected auto, cpu or cuda)")
    return torch.device(name)


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(root) / name / stamp


# -------------------------------------------------------------------------------------------------- runs


def load_average() -> str:
    """/proc/loadavg as one line ("n/a" where there is none): what timings are reported with."""
    path = Path("/proc/loadavg")
    return path.read_text().strip() if path.is_file() else "n/a"


def is_interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI") is None


class Run:
    """One run directory: config, log, metrics stream, summary, checkpoints, figures, optional W&B.

    Studies receive a `Run` and call `log_metrics`, `save_checkpoint`, `figure_path` and `progress`; the
    caller (CLI or sweep) writes the config and the summary.
    """

    def __init__(self, out_dir: str | Path, name: str, wandb_project: str | None = None, quiet: bool = False,
                 resume: bool = False, writer: bool = True):
        """`resume` keeps the log and metrics of an interrupted run in the same directory (appended to);
        `writer=False` (every torchrun rank but 0) writes nothing and stays quiet."""
        self.dir = Path(out_dir)
        self.name = name
        self.writer = writer
        self.quiet = quiet or not writer
        if writer:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "figures").mkdir(exist_ok=True)
        mode = "a" if resume else "w"
        self.logger = self._make_logger(mode)
        self._metrics_file = (open(self.dir / "metrics.jsonl", mode, buffering=1)  # noqa: SIM115
                              if writer else open(os.devnull, "w"))  # noqa: SIM115
        self._wandb = None
        self._wandb_project = wandb_project if writer else None
        self.start_time = time.perf_counter()

    def _make_logger(self, mode: str) -> logging.Logger:
        logger = logging.getLogger(f"tunelens.run.{self.dir.resolve()}.{os.getpid()}")
        logger.handlers.clear()
        logger.setLevel(logging.INFO)
        logger.propagate = False
        self._file_handler = logging.FileHandler(self.dir / "log.txt" if self.writer else os.devnull, mode=mode)
        self._file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(self._file_handler)
        if not self.quiet:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter(f"[{self.name}] %(message)s"))
            logger.addHandler(console)
        return logger

    # -- outputs
    def write_config(self, config: BaseModel) -> None:
        if not self.writer:
            return
        atomic_write_text(self.dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
        if self._wandb_project:
            self._start_wandb(config)

    def _start_wandb(self, config: BaseModel) -> None:
        try:
            import wandb
        except ImportError:
            raise UsageError("--wandb needs the wandb package: uv sync --extra wandb") from None
        self._wandb = wandb.init(project=self._wandb_project, name=f"{self.name}-{self.dir.name}",
                                 config=config_to_dict(config), dir=str(self.dir))

    def log(self, message: str) -> None:
        self.logger.info(message)

    def log_to_file(self, message: str) -> None:
        """Only into log.txt: progress lines that would clutter a console that is not a terminal."""
        self._file_handler.handle(self.logger.makeRecord(self.logger.name, logging.INFO, "", 0, message, None, None))

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": step, **to_jsonable(dict(metrics))}
        self._metrics_file.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log(dict(record), step=step)

    def rewind_metrics(self, step: int) -> None:
        """Drop the records logged after `step` (a resumed run logs them again from its checkpoint)."""
        if not self.writer:
            return
        self._metrics_file.close()
        path = self.dir / "metrics.jsonl"
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))
        self._metrics_file = open(path, "a", buffering=1)  # noqa: SIM115

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        if not self.writer:
            return
        write_json(self.dir / "summary.json", summary)
        if self._wandb is not None:
            self._wandb.summary.update(to_jsonable(dict(summary)))

    def save_checkpoint(self, name: str, tensors: Mapping[str, torch.Tensor]) -> Path:
        path = self.dir / f"{name}.safetensors"
        if self.writer:
            save_tensors(path, tensors)
        return path

    def figure_path(self, name: str) -> Path:
        return self.dir / "figures" / f"{name}.png"

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start_time

    @contextmanager
    def progress(self, total: int, description: str) -> Iterator[_Progress]:
        with _Progress(total, description, self, live=is_interactive() and not self.quiet) as bar:
            yield bar

    def close(self) -> None:
        self._metrics_file.close()
        if self._wandb is not None:
            self._wandb.finish()
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)


class _Progress:
    """A rich progress bar on a terminal; otherwise a log line every 10 % so log.txt shows the pace."""

    def __init__(self, total: int, description: str, run: Run, live: bool):
        self.total, self.description, self.run, self.live = total, description, run, live
        self.done = 0
        self._next_report = 0.1
        self._bar = None

    def __enter__(self) -> _Progress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[status]}"), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, status="")
        return self

    def update(self, n: int = 1, status: str = "") -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, status=status)
        elif self.total and self.done / self.total >= self._next_report:
            self.run.log_to_file(f"{self.description}: {self.done}/{self.total} {status}")
            self._next_report += 0.1

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def run_experiment(experiment: Any, config: BaseModel, out_dir: str | Path, wandb_project: str | None = None,
                   quiet: bool = False) -> dict[str, Any]:
    """Run one registered experiment into `out_dir`: config first, summary last (atomically).

    A failure is written with its traceback to log.txt and re-raised; the summary is then absent, so
    a half-finished run is never mistaken for a finished one.
    """
    from tunelens.distributed import is_writer

    writer = is_writer()  # under torchrun only rank 0 writes
    resume = (Path(out_dir) / "checkpoint").is_dir()  # an interrupted run that can continue where it stopped
    run = Run(out_dir, experiment.name, wandb_project=wandb_project, quiet=quiet, resume=resume, writer=writer)
    if writer:
        (run.dir / "summary.json").unlink(missing_ok=True)  # a stale summary would pass for this run's
    try:
        run.write_config(config)
        run.log(f"{experiment.name}: {experiment.summary} -> {run.dir}")
        seed_everything(config.seed)  # type: ignore[attr-defined]
        summary = experiment.run_function()(config, run)
        summary.setdefault("seconds", round(run.seconds, 2))
        run.write_summary(summary)
        run.log(f"done in {run.seconds:.1f}s; summary in {run.dir / 'summary.json'}")
        return summary
    except UsageError:
        raise
    except BaseException:
        run.logger.exception("run failed")
        raise
    finally:
        run.close()
