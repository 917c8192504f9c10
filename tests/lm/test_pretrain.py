import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelens.config import UsageError, validate_config
from tunelens.lm import pretrain as pretrain_module
from tunelens.lm.pretrain import TinyStoriesConfig, cached_model_dir, tiny_story_model


def test_micro_pretraining_lowers_held_out_loss(micro_lm):
    _, summary = micro_lm
    assert summary["eval_loss"] < summary["eval_loss_initial"] - 0.5, summary
    assert summary["train_loss"] < summary["eval_loss_initial"] - 0.5
    assert len(summary["samples"]) == 2 and all(s["continuation"] for s in summary["samples"])


def test_pretrained_directory_is_an_ordinary_hf_model(micro_lm):
    folder, summary = micro_lm
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == summary["n_params"]
    assert (folder / "model.safetensors").is_file() and tokenizer.bos_token == "<|bos|>"
    ids = torch.tensor([tokenizer("Once upon a time")["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_tiny_story_model_trains_once_then_reuses_the_cache(monkeypatch, tmp_path, nano_settings):
    monkeypatch.setenv("TUNELENS_CACHE", str(tmp_path))
    nano = TinyStoriesConfig(**nano_settings)
    folder = tiny_story_model(nano, quiet=True)
    assert folder == cached_model_dir(nano) and folder.parent.parent == tmp_path / "tiny-stories"
    assert (folder / "pretrain_summary.json").is_file()
    run_dir = folder.parent  # a standard run directory around the model
    assert {"config.yaml", "summary.json", "metrics.jsonl", "log.txt"} <= {p.name for p in run_dir.iterdir()}
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]  # no staging directory left behind

    def fail(*args, **kwargs):
        raise AssertionError("retrained a cached model")

    monkeypatch.setattr(pretrain_module, "pretrain", fail)
    assert tiny_story_model(nano, quiet=True) == folder


def test_cache_key_covers_the_config_and_the_corpus_version(monkeypatch, nano_settings):
    nano = TinyStoriesConfig(**nano_settings)
    before = cached_model_dir(nano)
    assert cached_model_dir(TinyStoriesConfig(**{**nano_settings, "steps": 4})) != before
    mixed = TinyStoriesConfig(**{**nano_settings, "caps_word_frac": 0.05})
    assert cached_model_dir(mixed) != before
    # a field added later is out of the key at its default, so models cached before it keep their directory
    assert "caps_word_frac" not in pretrain_module.cache_key(nano)["config"]
    monkeypatch.setattr(pretrain_module, "CORPUS_VERSION", -1)
    assert cached_model_dir(nano) != before


def test_config_checks():
    with pytest.raises(UsageError, match="unknown config key 'bogus'"):
        validate_config(TinyStoriesConfig, {"bogus": 1})
    with pytest.raises(UsageError, match="n_heads"):
        validate_config(TinyStoriesConfig, {"d_model": 100, "n_heads": 3})


def test_pretraining_leaves_the_callers_random_stream_alone(tmp_path, nano_settings):
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    pretrain_module.pretrain(TinyStoriesConfig(**nano_settings), tmp_path, log=lambda message: None)
    assert torch.equal(torch.rand(3), expected)


def test_the_registered_defaults_are_the_model_studies_load():
    from tunelens.registry import get_experiment

    assert cached_model_dir(get_experiment("tiny-stories").load_config()) == cached_model_dir(TinyStoriesConfig())


def test_repeat_halves_and_the_repeat_loss():
    from tunelens.lm.pretrain import repeat_halves, repeat_loss

    windows = torch.arange(40).view(8, 5)
    out = repeat_halves(windows, 0.5, seed=0)
    changed = [i for i in range(8) if not torch.equal(out[i], windows[i])]
    assert len(changed) == 4 and torch.equal(windows, torch.arange(40).view(8, 5))  # the input is left alone
    for i in changed:  # [a, b, c, d, e] -> [a, b, a, b, e]
        assert out[i].tolist() == [*windows[i, :2].tolist(), *windows[i, :2].tolist(), windows[i, 4].item()]
    assert torch.equal(repeat_halves(windows, 0.5, seed=0), out) and repeat_halves(windows, 0.0, 0).equal(windows)

    class Copier(torch.nn.Module):
        """Predicts, at position t, the token at t - 1: in [a, b, a, b] that is right exactly in the second half."""

        def forward(self, input_ids, attention_mask=None):
            logits = torch.full((*input_ids.shape, 64), -30.0)
            logits.scatter_(-1, torch.roll(input_ids, 1, dims=1)[..., None], 30.0)
            return type("Out", (), {"logits": logits})()

    windows = torch.tensor([[1, 2, 9, 9], [3, 4, 9, 9]])  # repeated: [1, 2, 1, 2] and [3, 4, 3, 4]
    assert repeat_loss(Copier(), windows, pad_id=0, device="cpu") < 1e-6
    assert repeat_loss(Copier(), torch.tensor([[1, 2, 3, 9, 9, 9]]), 0, "cpu") > 10  # halves of 3: no longer t - 1
