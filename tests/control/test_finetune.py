import json

import pytest
import torch
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.control.finetune import target_table, training_rows
from tunelens.control.samples import Sample

SMALL = ["--set", "n_train_items=1", "--set", "n_eval_items=1", "--set", "train.epochs=1", "--set",
         "train.batch_size=8", "--set", "train.lr=1e-2", "--set", "train.eval_every=0", "--set", "train.log_every=1",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def finetuned(micro_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("control_ft") / "run"
    result = CliRunner().invoke(app, ["control", "finetune", "--model", str(micro_model_dir), "--out", str(out),
                                      *SMALL])
    assert result.exit_code == 0, result.output
    return out


def test_summary_holds_before_and_after_in_the_evaluations_shape(finetuned):
    summary = json.loads((finetuned / "summary.json").read_text())
    for when in ("before", "after"):
        for case in ("given_words", "random_words", "icl_random_words"):
            entry = summary[when]["cases"][case]
            assert entry["n"] == 10 and 0 <= entry["mean_tvd"] <= 1
            assert {"pass_rate", "mean_tvd"} <= set(entry["sad"]) and {"pass_rate"} <= set(entry["aligned"])
    assert summary["n_train_rows"] == 30 and summary["n_eval_rows"] == 30  # 3 cases x 1 item x 10
    assert summary["steps"] == 4  # ceil(1 epoch x 30 rows / 8)
    assert (finetuned / "eval_before.json.gz").is_file() and (finetuned / "figures" / "before_after.png").is_file()
    assert not (finetuned / "checkpoint").exists()
    metrics = [json.loads(line) for line in (finetuned / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "train/loss" in m] == [0, 1, 2, 3]


def test_the_adapter_loads_with_plain_peft_and_changes_the_model(finetuned, micro_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(base, finetuned / "adapter")(input_ids=ids).logits
    assert not torch.allclose(before, adapted, atol=1e-6)  # training moved the LoRA weights away from zero
    config = json.loads((finetuned / "adapter" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}


def test_control_eval_uses_the_adapter_and_refuses_it_on_another_base(finetuned, micro_model_dir, tmp_path):
    import shutil

    ok = CliRunner().invoke(app, ["control", "eval", "--models", str(micro_model_dir), "--adapter",
                                  str(finetuned / "adapter"), "--num-examples", "1", "--out", str(tmp_path / "ok"),
                                  "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "ok" / "summary.json").read_text())["models"][str(micro_model_dir)]["adapter"]
    other = tmp_path / "other_base"
    shutil.copytree(micro_model_dir, other)
    bad = CliRunner().invoke(app, ["control", "eval", "--models", str(other), "--adapter",
                                   str(finetuned / "adapter"), "--out", str(tmp_path / "bad"), "--device", "cpu"])
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1, bad.output
    assert "was trained on base model" in lines[0] and str(other) in lines[0]


def test_training_rows_and_targets_line_up():
    samples = [Sample("given_words", 0, 30, 10, word1="cat", word2="dog"), Sample("random_words", 0, 70, 20, seed=7)]
    given_ids, shares = target_table(samples, {"cat": 11, "dog": 12})
    assert given_ids.tolist() == [[11, 12], [-1, -1]] and torch.allclose(shares, torch.tensor([[0.3, 0.7], [0.7, 0.3]]))
    rows = training_rows([[1, 2, 3], [1, 2]], start_index=5)
    assert [r.index for r in rows] == [5, 6] and rows[0].loss_mask == [0, 0, 1]


def test_training_words_never_include_a_held_out_word(micro):
    from tunelens.control.data import sad_words
    from tunelens.control.finetune import training_and_held_out_words, vocabulary_words
    from tunelens.control.samples import split_words

    _, tokenizer = micro
    _, eval_half = split_words(sad_words(), 0.5, 0)
    listed, held_out = training_and_held_out_words(tokenizer, "list", 0.5, 0, "My answer is:")
    vocabulary, held_out_again = training_and_held_out_words(tokenizer, "vocabulary", 0.5, 0, "My answer is:")
    assert held_out == held_out_again and set(held_out) <= set(eval_half)
    assert not set(listed) & set(held_out) and not set(vocabulary) & set(held_out)
    assert set(listed) <= set(vocabulary)  # the vocabulary adds the tokenizer's other words
    assert len(vocabulary) > len(listed) and all(w.isalpha() for w in vocabulary)
    assert vocabulary_words(tokenizer) == sorted(set(vocabulary_words(tokenizer)))
