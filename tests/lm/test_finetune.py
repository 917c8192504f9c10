import json

import pytest
import torch
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.lm.finetune import main_character_examples

MICRO_TASK = ["--set", "n_train_examples=48", "--set", "n_eval_examples=12", "--set", "train.steps=8",
              "--set", "train.batch_size=8", "--set", "train.checkpoint_every=3", "--set", "train.log_every=1",
              "--set", "n_samples=2", "--device", "cpu"]


def finetune(model_dir, out, *extra):
    return CliRunner().invoke(app, ["run", "lm-finetune", "--out", str(out), "--set", f"model={model_dir}",
                                    *MICRO_TASK, *extra])


def test_the_generated_task_asks_for_the_hero_named_in_the_first_paragraph():
    examples = main_character_examples(20, "train")
    for example in examples:
        name = example.completion.strip(" .")
        assert example.prompt.endswith("Question: Who is the main character?\nAnswer:")
        assert name in example.prompt.split("\n\n")[0]
    assert len({e.completion for e in examples}) > 5  # not one name for every story
    test_ids = {e.meta["story_index"] for e in main_character_examples(20, "test")}
    assert not test_ids & {e.meta["story_index"] for e in examples}


def test_full_finetuning_end_to_end_loads_with_plain_transformers(micro_lm, tmp_path):
    from transformers import AutoModelForCausalLM

    result = finetune(micro_lm[0], tmp_path / "full", "--set", "train.lr=3e-3")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["after"]["held_out_loss"] < summary["before"]["held_out_loss"]
    assert summary["steps"] == 8 and summary["resumed_from_step"] == 0 and len(summary["samples"]) == 2
    assert 0 <= summary["before"]["exact_match"] <= 1 and 0 <= summary["after"]["exact_match"] <= 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full" / "model")
    assert model.config.vocab_size > 0
    assert not (tmp_path / "full" / "checkpoint").exists()  # removed once the model is saved
    assert (tmp_path / "full" / "config.yaml").is_file() and (tmp_path / "full" / "metrics.jsonl").is_file()
    assert (tmp_path / "full" / "figures" / "loss.png").is_file()


def test_lora_finetuning_saves_an_adapter_that_plain_peft_loads(micro_lm, tmp_path):
    from peft import AutoPeftModelForCausalLM

    result = finetune(micro_lm[0], tmp_path / "lora", "--set", "adapter=lora", "--set", "train.lr=1e-2")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "lora" / "summary.json").read_text())
    assert summary["adapter"] == "lora" and summary["n_trainable"] < 20_000
    assert summary["after"]["held_out_loss"] < summary["before"]["held_out_loss"]
    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "lora" / "adapter")  # finds its base by itself
    ids = torch.tensor([[1, 2, 3]])
    assert model(input_ids=ids).logits.shape[:2] == (1, 3)


def test_an_interrupted_run_resumes_with_the_same_command(micro_lm, tmp_path, monkeypatch):
    from tunelens.lm import finetune as finetune_module

    whole = finetune(micro_lm[0], tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    real_train = finetune_module.train

    def interrupted(*args, **kwargs):
        real_train(*args, **kwargs, stop_after=5)  # steps 3 is checkpointed, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune_module, "train", interrupted)
    assert finetune(micro_lm[0], tmp_path / "cut").exit_code == 1
    assert (tmp_path / "cut" / "checkpoint").is_dir() and not (tmp_path / "cut" / "summary.json").exists()
    monkeypatch.setattr(finetune_module, "train", real_train)
    again = finetune(micro_lm[0], tmp_path / "cut")
    assert again.exit_code == 0, again.output
    resumed = json.loads((tmp_path / "cut" / "summary.json").read_text())
    reference = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert resumed["resumed_from_step"] == 3
    assert resumed["after"]["held_out_loss"] == pytest.approx(reference["after"]["held_out_loss"], rel=1e-5)
    records = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "train/loss" in r]
    assert steps == [0, 1, 2, 3, 4, 5, 6, 7]  # logged once each: what came after the checkpoint was rewound


@pytest.mark.parametrize("extra, fragment", [
    (["--set", "data=missing.jsonl"], "bad value for 'data': Value error, examples file not found: missing.jsonl"),
    (["--set", "train.batch_size=0"], "bad value for 'train.batch_size'"),
])
def test_config_errors_stop_before_the_run_in_one_line(micro_lm, tmp_path, extra, fragment):
    result = finetune(micro_lm[0], tmp_path / "bad", *extra)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
    assert not (tmp_path / "bad").exists()


def test_an_error_found_in_the_model_is_one_error_line_with_exit_2(micro_lm, tmp_path):
    result = finetune(micro_lm[0], tmp_path / "bad", "--set", "lora.target_modules=[c_attn]", "--set", "adapter=lora")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "no linear layer named 'c_attn'" in errors[0]
    assert "Traceback" not in result.output


def test_user_data_with_a_held_out_share(micro_lm, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}:", "completion": f" {w}"}) + "\n"
                            for w in ["cat", "dog", "sun", "hat", "map", "pen", "cup", "box", "bag", "car"]))
    result = finetune(micro_lm[0], tmp_path / "own", "--set", f"data={data}", "--set", "eval_frac=0.2")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "own" / "summary.json").read_text())
    assert summary["n_train_examples"] == 8 and summary["n_eval_examples"] == 2


def test_the_finetuned_checkpoint_of_a_config_is_trained_once(micro_lm, monkeypatch):
    from tunelens.lm import finetune as finetune_module
    from tunelens.lm.finetune import FinetuneConfig, finetuned_model

    config = FinetuneConfig(model=str(micro_lm[0]), n_train_examples=16, n_eval_examples=4, n_samples=0,
                            adapter="lora", device="cpu", train={"steps": 2, "batch_size": 4})
    calls = []
    real = finetune_module.finetune
    monkeypatch.setattr(finetune_module, "finetune", lambda *a: calls.append(1) or real(*a))
    first = finetuned_model(config)
    assert finetuned_model(config) == first and len(calls) == 1
    assert first.name == "adapter" and (first / "adapter_config.json").is_file()


def test_exact_match_ignores_surrounding_whitespace_only():
    from tunelens.lm.examples import Example
    from tunelens.lm.finetune import exact_match

    examples = [Example("q", " Mia."), Example("q", " Leo."), Example("q", " Ivy.")]
    assert exact_match([" Mia. ", "Leo", " ivy."], examples) == 1 / 3  # "Leo" lacks the dot, "ivy." the capital
