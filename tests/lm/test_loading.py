import pytest
import torch

from tunelens.config import UsageError
from tunelens.lm import aliases
from tunelens.lm.loading import load_model, load_tokenizer
from tunelens.lm.tokenizer import BOS, EOS, train_bpe_tokenizer


def test_load_by_local_dir_and_by_alias(micro_lm, monkeypatch):
    folder, _ = micro_lm
    model = load_model(folder)
    monkeypatch.setitem(aliases.MODEL_ALIASES, "micro", aliases.ModelAlias(str(folder), "llama", "tiny", "test"))
    by_alias = load_model("micro")
    tokenizer = load_tokenizer("micro", padding_side="left")
    assert tokenizer.padding_side == "left" and load_tokenizer(folder, padding_side="right").padding_side == "right"
    ids = torch.tensor([tokenizer("Once upon a time")["input_ids"]])
    assert not model.training and torch.equal(model(input_ids=ids).logits, by_alias(input_ids=ids).logits)


def test_pad_token_falls_back_to_eos(tmp_path):
    train_bpe_tokenizer(["a tiny corpus of words"] * 5, vocab_size=280, special_tokens=(BOS, EOS), out_dir=tmp_path)
    tokenizer = load_tokenizer(tmp_path, padding_side="right")
    assert tokenizer.pad_token == EOS and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_offline_missing_model_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError) as err:
        load_tokenizer("tunelens-test/not-a-real-model", padding_side="right")
    message = str(err.value)
    assert "tunelens-test/not-a-real-model" in message and "hf download" in message and "local directory" in message
    assert "\n" not in message
    fake = aliases.ModelAlias("tunelens-test/fake-1b", "llama", "1B", "")
    monkeypatch.setitem(aliases.MODEL_ALIASES, "fake-1b", fake)
    with pytest.raises(UsageError, match=r"'fake-1b \(tunelens-test/fake-1b\)' is not available locally"):
        load_model("fake-1b")


@pytest.mark.parametrize("name", ["./no/such/dir", "~/no/such/dir", "/no/such/dir"])
def test_missing_local_directory(name):
    with pytest.raises(UsageError, match="model directory not found"):
        load_model(name)


def test_invalid_name_is_a_usage_error():
    with pytest.raises(UsageError, match="neither a local directory, an alias"):
        load_model("not a model")


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_quantized_loading_refused_on_cpu(micro_lm, quantize):
    with pytest.raises(UsageError, match=f"{quantize} loading needs a CUDA device"):
        load_model(micro_lm[0], device="cpu", quantize=quantize)


def test_alias_table_is_plain_data():
    assert {"llama-3.1-8b", "qwen2.5-3b", "gemma-3-1b-it", "olmo2-1b-hops", "llama3.2-1b-untrained"} <= set(
        aliases.MODEL_ALIASES)
    assert aliases.MODEL_ALIASES["deepseek-7b-chat"].hub_id == "deepseek-ai/deepseek-llm-7b-chat"
    assert all(entry.hub_id.count("/") == 1 for entry in aliases.MODEL_ALIASES.values())


def test_hub_id_in_the_local_cache_loads_offline(micro_lm, monkeypatch, tmp_path):
    import shutil

    from huggingface_hub import constants

    folder, _ = micro_lm
    repo = tmp_path / "hub" / "models--tunelens-test--micro"
    shutil.copytree(folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model("tunelens-test/micro")
    tokenizer = load_tokenizer("tunelens-test/micro", padding_side="right")
    ids = torch.tensor([tokenizer("Once upon a time")["input_ids"]])
    assert torch.equal(model(input_ids=ids).logits, load_model(folder)(input_ids=ids).logits)


def test_tiny_stories_names_the_locally_pretrained_model(monkeypatch, tmp_path):
    from tunelens.lm import loading, pretrain

    monkeypatch.setattr(pretrain, "tiny_story_model", lambda config: tmp_path / str(config.caps_word_frac))
    assert loading.resolve_name("tiny-stories") == str(tmp_path / "0.0")
    assert loading.resolve_name("tiny-stories-mixedcase") == str(tmp_path / "0.05")
    assert tuple(pretrain.TINY_MODELS) == loading.TINY_NAMES


def test_a_directory_that_is_not_a_model_is_one_clear_error(tmp_path):
    from tunelens.config import UsageError
    from tunelens.lm.loading import load_model, load_tokenizer

    (tmp_path / "notes.txt").write_text("not a model")
    for load in (load_model, lambda path: load_tokenizer(path, padding_side="right")):
        with pytest.raises(UsageError, match="is a directory but not a Hugging Face model"):
            load(tmp_path)
