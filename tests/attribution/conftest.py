import json
from pathlib import Path

import pytest

from tunelens.data import HOPS_CORPUS

MICRO_TRAIN = ["vocab_size=300", "d_model=32", "n_layers=2", "n_heads=2", "d_mlp=64", "max_len=64",
               "train.epochs=2", "train.batch_size=16", "checkpoint_fractions=[0.5]", "eval_inputs=[1,2,3]"]


def write_subset(path: Path, n: int = 300) -> Path:
    """The first n documents of 20hops (ten 30-document cycles: every function appears)."""
    lines = HOPS_CORPUS.read_text().splitlines()[:n]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def micro_corpus(tmp_path_factory) -> Path:
    return write_subset(tmp_path_factory.mktemp("hops") / "micro.jsonl")


@pytest.fixture(scope="session")
def micro_pair(tmp_path_factory, micro_corpus) -> Path:
    """A hops-train run directory of a micro model on the micro corpus (trained once for the attribution tests)."""
    from tunelens.registry import get_experiment
    from tunelens.runs import run_experiment

    folder = tmp_path_factory.mktemp("micro_pair")
    experiment = get_experiment("hops-train")
    config = experiment.load_config(None, [f"corpus={micro_corpus}", *MICRO_TRAIN])
    run_experiment(experiment, config, folder, quiet=True)
    assert json.loads((folder / "summary.json").read_text())["steps"] == 38
    return folder
