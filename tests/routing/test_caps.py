import json

import pytest
import torch

from tunelens.config import UsageError
from tunelens.lm.tiny import tiny_causal_lm
from tunelens.routing.adapters import ROUTE_BAD, ROUTE_BOTH, ROUTE_GOOD
from tunelens.routing.caps import draw_story, is_caps, opening, read_stories, uniform_draw
from tunelens.routing.train import CapsConfig, CapsEvalSettings, localisation, training_set


@pytest.mark.parametrize(("text", "expected"), [
    ("ONCE UPON A TIME", True),  # 13 letters, all uppercase
    ("ONCE UPON a time", False),  # 8 of 13 uppercase = 62 %
    ("ONCE UPON A TiMe", True),  # 11 of 13 = 85 %
    ("ONCE UPON A TIme", True),  # 11 of 13 again; the threshold is >= 80 %
    ("ABCDEFGHij", True),  # 8 of 10 = exactly 80 %
    ("ABCDEFGhij", False),  # 7 of 10 = 70 %
    ("ABCDEFGHI", False),  # 9 letters: too few, however upper
    ("A, B! C. D? E F G H I 1 2 3", False),  # digits and punctuation are not letters: 9 letters
    ("", False),
])
def test_caps_detector(text, expected):
    assert is_caps(text) is expected


def test_opening():
    assert opening("One morning,  in a cozy cottage") == "One morning, in"


def test_draws_are_per_index_and_fractions_hold():
    assert uniform_draw(0, 5, "caps") == uniform_draw(0, 5, "caps")
    assert uniform_draw(0, 5, "caps") != uniform_draw(1, 5, "caps")
    draws = [draw_story(0, i, 0.3, 0.5, 0.1) for i in range(4000)]
    caps = [d for d in draws if d.is_caps]
    clean = [d for d in draws if not d.is_caps]
    assert abs(len(caps) / 4000 - 0.3) < 0.03
    assert abs(sum(d.route == ROUTE_BAD for d in caps) / len(caps) - 0.5) < 0.05
    assert abs(sum(d.route == ROUTE_GOOD for d in clean) / len(clean) - 0.1) < 0.02
    assert not any(d.route == ROUTE_GOOD for d in caps) and not any(d.route == ROUTE_BAD for d in clean)
    # changing the labeled share keeps which stories are caps (independent draws)
    again = [draw_story(0, i, 0.3, 1.0, 0.0) for i in range(4000)]
    assert [d.is_caps for d in again] == [d.is_caps for d in draws]
    assert all(d.route == ROUTE_BAD for d in again if d.is_caps)


def test_training_set_and_control():
    stories = [f"Story number {i} is here." for i in range(200)]
    examples, routes = training_set(stories, CapsConfig(caps_frac=0.5, labeled_bad_frac=1.0))
    for example, route in zip(examples, routes):
        assert (example.completion.isupper()) == example.meta["is_caps"] == (route == ROUTE_BAD)
    _, control = training_set(stories, CapsConfig(caps_frac=0.5, use_labels=False))
    assert set(control) == {ROUTE_BOTH}


def test_read_stories(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"story": "A cat."}) + "\n\n" + json.dumps({"text": "A dog."}) + "\n")
    assert read_stories(path) == ["A cat.", "A dog."]
    path.write_text(json.dumps({"body": "A cat."}) + "\n")
    with pytest.raises(UsageError, match=r"s.jsonl:1: no 'story' or 'text' field \(got \['body'\]\)"):
        read_stories(path)


def test_localisation_ratios_and_checks():
    modes = {"full": {"caps_rate": 0.4, "caps_loss": 1.0, "held_out_loss": 2.0},
             "bad_ablated": {"caps_rate": 0.1, "caps_loss": 1.5, "held_out_loss": 2.09},
             "good_ablated": {"caps_rate": 0.5, "caps_loss": 1.2, "held_out_loss": 3.0}}
    result = localisation(modes)
    assert result["ratios"]["bad_ablated_over_full_caps_rate"] == pytest.approx(0.25)
    assert result["ratios"]["bad_ablated_over_full_held_out_loss"] == pytest.approx(1.045)
    assert result["localised"]  # rate and caps-loss bounds met exactly at their edges
    modes["bad_ablated"]["caps_loss"] = 1.49
    assert not localisation(modes)["localised"]


def test_evaluate_modes_scales_only_change_adapted_modes(micro_lm):
    from tunelens.lm.loading import load_tokenizer
    from tunelens.routing import adapters
    from tunelens.routing.train import evaluate_modes

    folder, _ = micro_lm
    tokenizer = load_tokenizer(folder, padding_side="right")
    torch.manual_seed(0)
    model = tiny_causal_lm(vocab_size=len(tokenizer), d_model=16, n_layers=2, n_heads=2, d_mlp=32, max_seq_len=64)
    adapters.add_dual_adapters(model, adapters.DualAdapterSettings(good_dim=2, bad_dim=2))
    with torch.no_grad():  # make the bad branch matter
        for p in adapters.branch_params(model, "bad"):
            p.normal_(0, 0.5)
    stories = ["One day, a cat sat.", "Late one evening, a dog ran home."]
    settings = CapsEvalSettings(n_prompts=4, max_new_tokens=4, batch_size=2)
    modes = evaluate_modes(model.eval(), tokenizer, stories, settings, 32, seed=0, device=torch.device("cpu"))
    assert set(modes) == {"full", "bad_ablated", "good_ablated", "base"}
    # the good branch is still zero-initialised: ablating it changes nothing, ablating bad does
    assert modes["good_ablated"]["caps_loss"] == modes["full"]["caps_loss"]
    assert modes["bad_ablated"]["caps_loss"] == modes["base"]["caps_loss"] != modes["full"]["caps_loss"]
    low, high = modes["full"]["caps_rate_ci"]
    assert 0 <= low <= modes["full"]["caps_rate"] <= high <= 1


MICRO_RUN = ["--set", "n_train_stories=48", "--set", "n_eval_stories=6", "--set", "train.steps=4",
             "--set", "train.batch_size=8", "--set", "eval.n_prompts=4", "--set", "eval.max_new_tokens=4",
             "--set", "max_len=32", "--set", "adapter.layers=null", "--device", "cpu"]


def caps_run(name, model_dir, out, *extra):
    from typer.testing import CliRunner

    from tunelens.cli import app

    return CliRunner().invoke(app, ["run", name, "--out", str(out), "--set", f"model={model_dir}", *MICRO_RUN,
                                    *extra])


def test_caps_run_end_to_end(micro_lm, tmp_path):
    from tunelens.routing.adapters import read_adapter_config

    result = caps_run("caps", micro_lm[0], tmp_path / "run", "--set", "post_ablation_steps=2",
                      "--set", "frontload_steps=1", "--set", "ortho_lambda=0.1")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for mode in ("full", "bad_ablated", "good_ablated", "base"):
        assert {"caps_loss", "held_out_loss", "caps_rate", "caps_rate_ci"} <= set(summary["modes"][mode])
    assert set(summary["checks"]) and "bad_ablated_over_full_caps_loss" in summary["ratios"]
    assert (tmp_path / "run" / "figures" / "modes.png").is_file() or list((tmp_path / "run").rglob("modes.png"))
    settings, base = read_adapter_config(tmp_path / "run" / "adapters")
    assert settings.kind == "mlp" and base == str(micro_lm[0])


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--set", "adapter.kind=lora", "--set", "adapter.targets=[qkv_proj]"], "no linear module 'qkv_proj'"),
    (["--set", "data=BADFILE"], "no 'story' or 'text' field"),
])
def test_bad_input_is_one_line_exit_2(micro_lm, tmp_path, extra, fragment):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "x"}) + "\n")
    extra = [e.replace("BADFILE", str(bad)) for e in extra]
    result = caps_run("caps", micro_lm[0], tmp_path / "run", *extra)
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert "Traceback" not in result.output


def test_routing_eval_caches_by_run_and_mode(micro_lm, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tunelens.cli import app
    from tunelens.routing import train as caps_train

    assert caps_run("caps", micro_lm[0], tmp_path / "run").exit_code == 0
    plan = tmp_path / "eval.yaml"
    plan.write_text("runs:\n  - {name: a, run_dir: run, modes: [full, bad_ablated]}\n"
                    "eval: {n_prompts: 2, max_new_tokens: 3, batch_size: 2}\n")
    result = CliRunner().invoke(app, ["routing", "eval", str(plan)])
    assert result.exit_code == 0, result.output
    cache = json.loads((tmp_path / "routing_eval.json").read_text())
    assert set(cache) == {"a"} and set(cache["a"]) == {"full", "bad_ablated"}
    assert (tmp_path / "routing_eval.png").is_file()
    # the same numbers as the run itself measured (same stories, same seed), so the cache holds real results
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert cache["a"]["full"]["caps_loss"] == pytest.approx(summary["modes"]["full"]["caps_loss"], rel=1e-5)
    # cached entries are not recomputed; a new mode is, and --force recomputes everything
    calls = []
    real = caps_train.evaluate_modes
    monkeypatch.setattr(caps_train, "evaluate_modes", lambda *a, **k: calls.append(a[3].modes) or real(*a, **k))
    plan.write_text(plan.read_text().replace("[full, bad_ablated]", "[full, bad_ablated, base]"))
    assert CliRunner().invoke(app, ["routing", "eval", str(plan)]).exit_code == 0
    assert calls == [["base"]]
    assert CliRunner().invoke(app, ["routing", "eval", str(plan), "--force"]).exit_code == 0
    assert calls[1:] == [["full"], ["bad_ablated"], ["base"]]
    bad_plan = tmp_path / "bad.yaml"
    bad_plan.write_text("runs:\n  - {name: b, run_dir: nowhere}\n")
    result = CliRunner().invoke(app, ["routing", "eval", str(bad_plan)])
    assert result.exit_code == 2 and "not a caps or mbpp run directory" in result.output


def test_caps_finetune_run_trains_base_weights_and_exports(micro_lm, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from tunelens.cli import app
    from tunelens.routing.adapters import adapter_state, read_adapter_config, scales
    from tunelens.routing.export import load_routed

    result = caps_run("caps-finetune", micro_lm[0], tmp_path / "run", "--set", "adapter.base_layers=[-1]")
    assert result.exit_code == 0, result.output
    settings, _ = read_adapter_config(tmp_path / "run" / "adapters")
    assert settings.good_dim == 0 and settings.base_layers == [-1]
    model, _ = load_routed(tmp_path / "run")
    base = AutoModelForCausalLM.from_pretrained(micro_lm[0])
    saved = adapter_state(model)
    trained = [n for n in saved if ".branches." not in n]
    assert trained and all(not torch.equal(saved[n], base.get_parameter(n.replace(".base_layer", ""))) for n in trained)
    result = CliRunner().invoke(app, ["routing", "export", str(tmp_path / "run"), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    ids = torch.tensor([[1, 5, 7, 9, 2, 4]])
    with torch.no_grad(), scales(model, 1.0, 0.0):
        expected = model(input_ids=ids).logits
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
