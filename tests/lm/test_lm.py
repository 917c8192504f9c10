import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.config import UsageError
from tunelens.lm import aliases
from tunelens.lm.batching import pad_batch, per_example_loss
from tunelens.lm.corpus import make_story, story_splits
from tunelens.lm.embeddings import add_special_tokens
from tunelens.lm.generation import sample, top_p_filter
from tunelens.lm.loading import load_model, load_tokenizer
from tunelens.lm.tiny import tiny_causal_lm
from tunelens.lm.tokenizer import BOS, EOS, PAD, train_bpe_tokenizer


def test_micro_pretraining_lowers_held_out_loss(micro_lm):
    _, summary = micro_lm
    assert summary["eval_loss"] < summary["eval_loss_initial"] - 0.5, summary
    assert len(summary["samples"]) == 2 and all(s["continuation"] for s in summary["samples"])


def test_load_by_local_dir_and_by_alias(micro_lm, monkeypatch):
    folder, _ = micro_lm
    model = load_model(folder)
    monkeypatch.setitem(aliases.MODEL_ALIASES, "micro", aliases.ModelAlias(str(folder), "llama", "tiny", "test"))
    by_alias = load_model("micro")
    tokenizer = load_tokenizer("micro", padding_side="left")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    ids = torch.tensor([tokenizer("Once upon a time")["input_ids"]])
    assert torch.equal(model(input_ids=ids).logits, by_alias(input_ids=ids).logits)


def test_saved_tiny_models_reload_with_plain_transformers(tmp_path):
    for architecture in ["llama", "olmo2"]:
        torch.manual_seed(0)
        model = tiny_causal_lm(architecture, vocab_size=64, d_model=16, n_layers=2, n_heads=2, max_seq_len=32).eval()
        model.save_pretrained(tmp_path / architecture)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / architecture).eval()
        ids = torch.randint(0, 64, (2, 10))
        assert type(reloaded).__name__.lower().startswith(architecture)
        assert torch.allclose(model(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-6)


def test_offline_missing_model_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError) as err:
        load_tokenizer("tunelens-test/not-a-real-model", padding_side="right")
    message = str(err.value)
    assert "tunelens-test/not-a-real-model" in message and "hf download" in message and "local directory" in message
    assert "\n" not in message
    with pytest.raises(UsageError, match=r"olmo2-1b-hops \(Lamsheeper/OLMo2-1B-hops\)"):
        load_model("olmo2-1b-hops")


def test_missing_local_directory():
    with pytest.raises(UsageError, match="model directory not found"):
        load_model("./no/such/dir")


def test_quantized_loading_refused_on_cpu(micro_lm):
    with pytest.raises(UsageError, match="4bit loading needs a CUDA device"):
        load_model(micro_lm[0], device="cpu", quantize="4bit")


def test_tokenizer_round_trip_with_special_tokens(tmp_path):
    texts = [make_story(0, i) for i in range(200)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300, special_tokens=(BOS, EOS, PAD, "<|fn|>"),
                                    out_dir=tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = f'{BOS}Mia said, "Hello, FOX!" <|fn|> café{EOS}'
    ids = reloaded(text, add_special_tokens=False)["input_ids"]
    assert reloaded.decode(ids) == text
    assert reloaded.convert_tokens_to_ids("<|fn|>") in ids and reloaded.eos_token == EOS and reloaded.pad_token == PAD
    assert len(reloaded) <= 300


def test_new_token_embeddings_get_the_median_norm(micro_lm):
    folder, _ = micro_lm
    model, tokenizer = load_model(folder), load_tokenizer(folder, padding_side="right")
    old = model.get_input_embeddings().weight.detach().clone()
    new_ids = add_special_tokens(model, tokenizer, ["<|a|>", "<|b|>"], torch.Generator().manual_seed(0))
    weight = model.get_input_embeddings().weight.detach()
    assert new_ids == [len(old), len(old) + 1] and weight.shape[0] == len(old) + 2
    assert torch.equal(weight[: len(old)], old)
    assert torch.allclose(weight[new_ids].norm(dim=-1), old.norm(dim=-1).median().expand(2), rtol=1e-5)
    assert not torch.allclose(weight[new_ids[0]], weight[new_ids[1]])


def test_pad_batch_sides():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_per_example_loss_hand_computed_and_ignores_padding():
    # vocab 2. Row 0 predicts token 1 from position 0 with logits (0, log 3): p = 3/4; its second target is padding.
    # Row 1 predicts 0 then 1 with uniform logits: p = 1/2 each.
    log3 = torch.log(torch.tensor(3.0))
    logits = torch.tensor([[[0.0, log3], [9.0, -9.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    ids = torch.tensor([[0, 1, 1], [1, 0, 1]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss = per_example_loss(logits, ids, mask)
    assert torch.allclose(loss, torch.tensor([-torch.log(torch.tensor(0.75)), -torch.log(torch.tensor(0.5))]))


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 <= 0.5 + 0.3
    assert torch.isfinite(top_p_filter(logits, 0.1)).sum() == 1


def test_batched_sampling_greedy_matches_unbatched(micro_lm):
    folder, _ = micro_lm
    model, tokenizer = load_model(folder), load_tokenizer(folder, padding_side="left")
    prompts = ["Once upon a time, in", "Mia"]
    together = sample(model, tokenizer, prompts, max_new_tokens=8, temperature=0)
    alone = [sample(model, tokenizer, [p], max_new_tokens=8, temperature=0)[0] for p in prompts]
    assert together == alone


def test_corpus_is_stable_and_split_is_fixed():
    small_train, small_test = story_splits(50, 5, seed=3)
    big_train, big_test = story_splits(200, 10, seed=3)
    assert big_train[:50] == small_train and big_test[:5] == small_test
    assert not set(big_train) & set(big_test)
    text = " ".join(big_train)
    assert any(c.isupper() for c in text) and any(c.islower() for c in text) and '"' in text
    assert len(set(big_train)) == 200


def test_cli_models_and_pretrain_errors():
    runner = CliRunner()
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and all(alias in result.stdout for alias in aliases.MODEL_ALIASES)
    for args, message in [(["pretrain", "tiny-stories", "--set", "bogus=1"], "unknown config key 'bogus'"),
                          (["pretrain", "big-stories"], "unknown pretraining target 'big-stories'")]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0


def test_spd_on_a_micro_lm_with_all_masks_one_reproduces_the_logits(micro_lm):
    from tunelens.spd.component_model import LayerMask
    from tunelens.spd.configs import SpdConfig
    from tunelens.spd.train import build_component_model, build_target

    folder, _ = micro_lm
    config = SpdConfig.model_validate({"target": {"kind": "lm", "model": str(folder), "seq_len": 16,
                                                  "n_train_stories": 40, "n_eval_stories": 5,
                                                  "modules": ["model.embed_tokens", "model.layers.0.mlp.up_proj"]},
                                       "C": 7})
    target = build_target(config, torch.device("cpu"), lambda m: None)
    model = build_component_model(config, target)
    ids = target.sample_batch(3)
    expected, _ = model.forward_target(ids)
    ones = {n: LayerMask(mask=torch.ones(3, 16, 7), delta_mask=torch.ones(3, 16)) for n in model.names}
    assert torch.allclose(model.forward_masked(ids, ones, model.weight_deltas()), expected, atol=1e-4)
    without_delta = {n: LayerMask(mask=torch.ones(3, 16, 7)) for n in model.names}
    assert not torch.allclose(model.forward_masked(ids, without_delta), expected, atol=1e-2)


def test_spd_lm_run_end_to_end(micro_lm, tmp_path):
    import json

    from tunelens.registry import get_experiment
    from tunelens.runs import run_experiment

    folder, _ = micro_lm
    experiment = get_experiment("lm_emb")
    config = experiment.load_config(assignments=[
        f"target.model={folder}", "target.seq_len=16", "target.n_train_stories=40", "target.n_eval_stories=10",
        "optim.steps=5", "optim.batch_size=4", "eval.batch_size=4", "C=10", "optim.faithfulness_warmup_steps=2"])
    run_experiment(experiment, config, tmp_path, quiet=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"kl", "ce_target", "ce_masked", "ce_unmasked"} <= set(summary)
    assert 0 <= summary["layers"]["model.embed_tokens"]["n_alive"] <= 10
    assert (tmp_path / "figures" / "top_tokens_model.embed_tokens.png").is_file()
    assert not (tmp_path / "target.safetensors").exists()  # the LM is reloaded from its source, not copied


def test_unknown_lm_module_is_a_usage_error(micro_lm):
    from tunelens.spd.configs import SpdConfig
    from tunelens.spd.train import build_target

    config = SpdConfig.model_validate({"target": {"kind": "lm", "model": str(micro_lm[0]), "n_train_stories": 20,
                                                  "n_eval_stories": 5, "modules": ["model.layers.9.mlp"]}})
    with pytest.raises(UsageError, match="no module 'model.layers.9.mlp'"):
        build_target(config, torch.device("cpu"), lambda m: None)
