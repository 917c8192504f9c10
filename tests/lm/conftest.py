import pytest

from tunelens.lm.pretrain import TinyStoriesConfig, pretrain

MICRO = TinyStoriesConfig(n_train_stories=300, n_eval_stories=20, vocab_size=400, d_model=32, n_layers=1, n_heads=2,
                          d_mlp=64, seq_len=32, steps=60, batch_size=8, n_samples=2)
NANO = {"n_train_stories": 60, "n_eval_stories": 5, "vocab_size": 300, "d_model": 16, "n_layers": 1, "n_heads": 2,
        "d_mlp": 32, "seq_len": 32, "steps": 3, "batch_size": 4, "n_samples": 1}


@pytest.fixture(scope="session")
def micro_lm(tmp_path_factory):
    """A micro story model pretrained once for the LM tests: (directory, summary)."""
    folder = tmp_path_factory.mktemp("micro_lm")
    return folder, pretrain(MICRO, folder, log=lambda message: None)


@pytest.fixture
def nano_settings() -> dict:
    """A few steps of a nano model: for tests of the plumbing (CLI, cache), not of learning."""
    return dict(NANO)
