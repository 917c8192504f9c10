import csv

import pytest

from tunelens.config import UsageError
from tunelens.sweep import expand_grid, flatten, run_sweep

MICRO = ["optim.steps=20", "optim.batch_size=64", "eval.batch_size=64", "eval.every=10", "target.train_steps=200",
         "save_checkpoint=false"]


def test_expand_grid_full_product_experiment_overrides_global():
    grid = {
        "global": {"seed": {"values": [0, 1]}, "optim": {"lr": {"values": [0.1]}}},
        "tms_5-2": {"optim": {"lr": {"values": [0.2, 0.3]}}},
        "tms_40-10": {"C": {"values": [5, 6, 7]}},
    }
    points = expand_grid(grid, "tms_5-2")
    assert points == [
        {"seed": 0, "optim.lr": 0.2}, {"seed": 0, "optim.lr": 0.3},
        {"seed": 1, "optim.lr": 0.2}, {"seed": 1, "optim.lr": 0.3},
    ]
    assert len(expand_grid(grid, "tms_40-10")) == 2 * 1 * 3


@pytest.mark.parametrize("grid, message", [
    ({"global": {"seed": [0, 1]}}, "grid key 'seed'"),
    ({"global": {"seed": {"values": []}}}, "non-empty list"),
    ({"tms_5_2": {"seed": {"values": [1]}}}, "neither 'global' nor a registered experiment"),
    ({}, "no parameters"),
])
def test_bad_grids(grid, message):
    with pytest.raises(UsageError, match=message):
        expand_grid(grid, "tms_5-2")


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3, "f": [1]}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def write_grid(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("global:\n  seed: {values: [0, 1]}\ntms_5-2:\n  loss:\n"
                    "    importance_minimality: {values: [1.0e-3, 3.0e-3]}\n")
    return grid


def read_rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_local_sweep_two_jobs_writes_csv(tmp_path):
    out = run_sweep("tms_5-2", write_grid(tmp_path), tmp_path / "sweep", jobs=2, assignments=MICRO)
    rows = read_rows(out)
    assert len(rows) == 4
    assert [(r["seed"], r["loss.importance_minimality"]) for r in rows] == [
        ("0", "0.001"), ("0", "0.003"), ("1", "0.001"), ("1", "0.003")]
    assert all(r["status"] == "ok" for r in rows)
    assert all(float(r["layers.linear1.ci_l0"]) >= 0 and r["steps"] == "20" for r in rows)
    assert rows[0]["loss_stochastic_recon"] != rows[2]["loss_stochastic_recon"]  # seeds differ


def test_slurm_launcher_through_submitit_local_executor(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("global:\n  seed: {values: [0, 1]}\n")
    out = run_sweep("tms_5-2", grid, tmp_path / "sweep", jobs=2, launcher="slurm", assignments=MICRO,
                    submitit_cluster="local")
    rows = read_rows(out)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert (tmp_path / "sweep" / "point-001" / "summary.json").is_file()
