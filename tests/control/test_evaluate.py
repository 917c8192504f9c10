import csv
import gzip
import json
import shutil

import pytest
from typer.testing import CliRunner

from tunelens.cli import app

FAST = ["--set", "num_examples=2", "--device", "cpu"]


def run_eval(out, *args):
    return CliRunner().invoke(app, ["run", "output-control", "--out", str(out), *FAST, *args])


def plain_text_files(folder):
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".csv", ".txt", ".yaml", ".jsonl")]


def test_a_run_writes_every_file_and_the_summary_keys(micro_model_dir, tmp_path):
    result = run_eval(tmp_path / "run", "--set", f"models=[{micro_model_dir}]")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    for case in ("given_words", "random_words", "icl_random_words"):
        entry = summary["cases"][case]
        assert entry["n"] == 20 and entry["n_skipped"] == 0  # 2 items x 10 grid points
        assert 0 <= entry["mean_tvd"] <= 1
        for mode in ("sad", "aligned"):
            assert 0 <= entry[mode]["pass_rate"] <= 1
            # SAD's ceiling and floor on the same samples (hand-computed in test_scoring): 0.7 / 0.8, 1.0 / 0.8
            oracle = summary["baselines"]["oracle"]["cases"][case][mode]["pass_rate"]
            fifty = summary["baselines"]["fifty_fifty"]["cases"][case][mode]["pass_rate"]
            assert (oracle, fifty) == ((0.7, 0.8) if mode == "sad" else (1.0, 0.8))
    assert summary["n_single_token_words"] > 20
    for name in ("results.json", "pass_rates.csv", "mean_tvd.csv", "figures/pass_rate.png",
                 "figures/achieved_vs_requested.png", "config.yaml", "log.txt"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "pass_rates.csv").open()))
    assert len(rows) == (1 + 2) * 3 * 2  # (model + 2 references) x cases x modes
    per_sample = list(run.glob("results_*.json.gz"))
    assert len(per_sample) == 1
    with gzip.open(per_sample[0], "rt") as handle:
        records = json.load(handle)["records"]
    assert len(records) == 60 and {"sad", "aligned", "top"} <= set(records[0])
    # no SAD-derived text in plain text: none of the sampled words appears outside the compressed file
    words = {r[k] for r in records for k in ("word1", "word2") if r[k]}
    for path in plain_text_files(run):
        text = path.read_text()
        assert not [w for w in words if f"'{w}'" in text or f'"{w}"' in text], path


def test_sad_samples_with_split_words_are_skipped_and_counted(micro_model_dir, tmp_path):
    result = run_eval(tmp_path / "sad", "--set", f"models=[{micro_model_dir}]", "--set", "sample_set=sad",
                      "--set", "cases=[given_words]")
    assert result.exit_code == 0, result.output
    entry = json.loads((tmp_path / "sad" / "summary.json").read_text())["cases"]["given_words"]
    # the micro tokenizer spells only 60 of the list's first words and a few common ones as one token
    assert entry["n"] + entry["n_skipped"] == 20 and entry["n_skipped"] > 0
    log = (tmp_path / "sad" / "log.txt").read_text()
    assert f"{entry['n_skipped']} of 20 samples skipped" in log and "not scored by a first piece" in log
    with gzip.open(next((tmp_path / "sad").glob("results_*.json.gz")), "rt") as handle:
        skipped = [r for r in json.load(handle)["records"] if r["skipped"]]
    assert len(skipped) == entry["n_skipped"] and "sad" not in skipped[0]


def test_control_eval_takes_several_models(micro_model_dir, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(micro_model_dir, twin)
    result = CliRunner().invoke(app, ["control", "eval", "--models", str(micro_model_dir), str(twin),
                                      "--num-examples", "1", "--out", str(tmp_path / "two"), "--device", "cpu",
                                      "--set", "cases=[given_words]"])
    assert result.exit_code == 0, result.output
    combined = json.loads((tmp_path / "two" / "results.json").read_text())
    assert len(combined["models"]) == 2 and len(list((tmp_path / "two").glob("results_*.json.gz"))) == 2
    first, second = (m["cases"]["given_words"] for m in combined["models"].values())
    assert first["mean_tvd"] == pytest.approx(second["mean_tvd"])  # the same weights on the same samples


@pytest.mark.parametrize("args, fragment", [
    (["--set", "cases=[given_words, gven_words]"], "unknown case 'gven_words' (known: given_words, random_words, "
                                                   "icl_random_words)"),
    (["--set", "sample_set=all"], "bad value for 'sample_set'"),
])
def test_config_errors_are_one_line(micro_model_dir, tmp_path, args, fragment):
    result = run_eval(tmp_path / "bad", "--set", f"models=[{micro_model_dir}]", *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
    assert not (tmp_path / "bad").exists()


def test_an_unknown_option_of_control_eval_is_one_line(micro_model_dir, tmp_path):
    result = CliRunner().invoke(app, ["control", "eval", "--models", str(micro_model_dir), "--num-exampels", "1"])
    assert result.exit_code == 2 and "no such option: --num-exampels" in result.stderr

