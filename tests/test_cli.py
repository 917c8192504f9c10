import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.registry import EXPERIMENTS

runner = CliRunner()


def run_cli(*args):
    return runner.invoke(app, list(args))


def one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


def test_list_is_name_study_description():
    result = run_cli("list")
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == list(EXPERIMENTS)
    assert all(len(r) == 3 and r[1] in ("spd", "lm", "routing", "attribution", "control") for r in rows)
    assert {r[0]: r[1] for r in rows}["lm-finetune"] == "lm"


def test_unknown_experiment_lists_close_names():
    line = one_line_error(run_cli("run", "tms_5_2"))
    assert "unknown experiment 'tms_5_2'" in line and "tms_5-2" in line


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--set", "optim.stepz=3"], "unknown config key 'optim.stepz'"),
        (["--set", "optim.steps=many"], "bad value for 'optim.steps'"),
        (["--set", "optim.steps"], "--set expects key.path=value"),
        (["--config", "does/not/exist.yaml"], "config file not found"),
        (["--device", "tpu"], "--device must be auto, cpu or cuda"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, fragment):
    line = one_line_error(run_cli("run", "tms_5-2", "--out", str(tmp_path / "r"), *args))
    assert fragment in line
    assert not (tmp_path / "r").exists()  # nothing started, nothing written


def test_unreadable_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    assert "unreadable YAML" in one_line_error(run_cli("run", "tms_5-2", "--config", str(bad)))


def test_console_script_exit_status_and_no_traceback(tmp_path):
    """Through the real entry point: exit 2, one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "tunelens.cli", "run", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


MICRO = ["--set", "optim.steps=30", "--set", "optim.batch_size=64", "--set", "eval.batch_size=64",
         "--set", "target.train_steps=200", "--set", "eval.every=10"]


def test_run_writes_run_directory(tmp_path):
    out = tmp_path / "run"
    result = run_cli("run", "tms_5-2", "--out", str(out), "--seed", "3", *MICRO)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["seconds"] > 0
    assert set(summary["layers"]) == {"linear1", "linear2"}
    assert "seed: 3" in (out / "config.yaml").read_text()
    metrics_lines = (out / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics_lines[0])["step"] == 0
    assert (out / "components.safetensors").is_file() and (out / "log.txt").is_file()
    assert {p.name for p in (out / "figures").iterdir()} >= {"importance_one_hot.png", "tms_polygon.png"}
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files
    report = run_cli("report", str(out))
    assert report.exit_code == 0 and "layers.linear1.n_alive" in report.stdout
    assert "no summary.json" in one_line_error(run_cli("report", str(tmp_path)))


def test_several_names_get_subdirectories(tmp_path):
    result = run_cli("run", "tms_5-2", "tms_5-2-id", "--out", str(tmp_path), *MICRO)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tms_5-2" / "summary.json").is_file()
    assert (tmp_path / "tms_5-2-id" / "summary.json").is_file()


def test_component_count_for_unknown_module_is_a_usage_error(tmp_path):
    result = run_cli("run", "tms_5-2", "--out", str(tmp_path / "r"), *MICRO, "--set", "C={linear1: 3}")
    line = one_line_error(result)
    assert "bad value for 'C'" in line and "['linear1', 'linear2']" in line
    assert not (tmp_path / "r").exists()


def test_failure_during_run_exits_1_with_cause_and_logs_traceback(tmp_path, monkeypatch):
    import tunelens.spd.train

    def explode(config, run):
        raise RuntimeError("loss went NaN")

    monkeypatch.setattr(tunelens.spd.train, "run", explode)
    result = run_cli("run", "tms_5-2", "--out", str(tmp_path / "r"))
    assert result.exit_code == 1
    assert "RuntimeError: loss went NaN" in result.stderr
    assert "Traceback" in (tmp_path / "r" / "log.txt").read_text()
    assert not (tmp_path / "r" / "summary.json").exists()


def test_wandb_without_the_package_is_a_usage_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    line = one_line_error(run_cli("run", "tms_5-2", "--out", str(tmp_path / "r"), "--wandb", "proj", *MICRO))
    assert "uv sync --extra wandb" in line
