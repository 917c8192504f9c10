import json

from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.lm import aliases


def test_models_lists_every_alias():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    lines = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert set(lines) == set(aliases.MODEL_ALIASES)
    assert lines["qwen2.5-3b"][1] == "Qwen/Qwen2.5-3B"


def test_pretrain_usage_errors_are_one_line():
    runner = CliRunner()
    for args, message in [(["pretrain", "tiny-stories", "--set", "bogus=1"], "unknown config key 'bogus'"),
                          (["pretrain", "tiny-stories", "--set", "steps=0"], "bad value for 'steps'"),
                          (["pretrain", "big-stories"], "unknown pretraining target 'big-stories'")]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0


def test_pretrain_into_a_directory(tmp_path, nano_settings):
    args = ["pretrain", "tiny-stories", "--out", str(tmp_path / "model")]
    for key, value in nano_settings.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "model"
    folder = run_dir / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json", "pretrain_summary.json"} <= {
        p.name for p in folder.iterdir()}
    assert {"config.yaml", "summary.json", "log.txt"} <= {p.name for p in run_dir.iterdir()}
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 3
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2  # steps 0 and 2
    AutoModelForCausalLM.from_pretrained(folder)


def test_pretrain_into_the_cache_then_reuse_it(nano_settings):
    args = ["pretrain", "tiny-stories"]
    for key, value in nano_settings.items():
        args += ["--set", f"{key}={value}"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0 and "held-out loss" in first.stdout, first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "already pretrained" in second.stdout


def test_too_few_stories_for_a_window_is_a_usage_error(tmp_path, nano_settings):
    args = ["pretrain", "tiny-stories", "--out", str(tmp_path)]
    for key, value in {**nano_settings, "n_eval_stories": 1, "seq_len": 512}.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "no window of seq_len=512" in result.stderr
