"""The SPD language-model target on the micro story model (here because it needs the `micro_lm` fixture)."""

import pytest
import torch

from tunelens.config import UsageError


def test_spd_on_a_micro_lm_with_all_masks_one_reproduces_the_logits(micro_lm):
    from tunelens.spd.component_model import LayerMask
    from tunelens.spd.configs import SpdConfig
    from tunelens.spd.targets import build_target
    from tunelens.spd.train import build_component_model

    folder, _ = micro_lm
    config = SpdConfig.model_validate({"target": {"kind": "lm", "model": str(folder), "seq_len": 16,
                                                  "n_train_stories": 40, "n_eval_stories": 5,
                                                  "modules": ["model.embed_tokens", "model.layers.0.mlp.up_proj"]},
                                       "C": 7})
    target = build_target(config.target, torch.device("cpu"), lambda m: None)
    model = build_component_model(config, target)
    ids = target.sample_batch(3)
    expected, _ = model.forward_target(ids)
    ones = {n: LayerMask(mask=torch.ones(3, 16, 7), delta_mask=torch.ones(3, 16)) for n in model.names}
    assert torch.allclose(model.forward_masked(ids, ones, model.weight_deltas()), expected, atol=1e-4)
    without_delta = {n: LayerMask(mask=torch.ones(3, 16, 7)) for n in model.names}
    assert not torch.allclose(model.forward_masked(ids, without_delta), expected, atol=1e-2)


def test_spd_lm_run_end_to_end_and_reloaded_from_its_source(micro_lm, tmp_path):
    """The summary's numbers are those of the saved decomposition on the held-out windows: recomputed from the
    reloaded run (the LM from its source, the components from the checkpoint) they come out the same."""
    import json

    import torch.nn.functional as F

    from tunelens.registry import get_experiment
    from tunelens.runs import run_experiment
    from tunelens.spd import metrics
    from tunelens.spd.component_model import LayerMask
    from tunelens.spd.losses import kl_output_loss
    from tunelens.spd.reload import load_decomposition

    folder, _ = micro_lm
    experiment = get_experiment("lm_emb")
    config = experiment.load_config(assignments=[
        f"target.model={folder}", "target.seq_len=16", "target.n_train_stories=40", "target.n_eval_stories=10",
        "optim.steps=5", "optim.batch_size=4", "eval.batch_size=4", "C=10", "optim.faithfulness_warmup_steps=2"])
    run_experiment(experiment, config, tmp_path, quiet=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "figures" / "top_tokens_model.embed_tokens.png").is_file()
    assert not (tmp_path / "target.safetensors").exists()  # the LM is reloaded from its source, not copied

    _, target, model = load_decomposition(tmp_path)
    ids = target.eval_batch(4)
    with torch.no_grad():
        logits = target.model(input_ids=ids).logits
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())  # every window is full: no padding
        assert summary["ce_target"] == pytest.approx(ce.item(), rel=1e-5)
        _, layer_inputs = model.forward_target(ids)
        importance = model.importances(layer_inputs).lower["model.embed_tokens"]
        masked = model.forward_masked(ids, {"model.embed_tokens": LayerMask(mask=importance)})
    assert summary["kl"] == pytest.approx(kl_output_loss(masked, logits).item(), rel=1e-5)
    n_alive = metrics.n_alive(importance.flatten(0, 1), config.eval.ci_alive_threshold)
    assert summary["layers"]["model.embed_tokens"]["n_alive"] == n_alive


def test_unknown_lm_module_is_a_usage_error(micro_lm):
    from tunelens.spd.configs import SpdConfig
    from tunelens.spd.targets import build_target

    config = SpdConfig.model_validate({"target": {"kind": "lm", "model": str(micro_lm[0]), "n_train_stories": 20,
                                                  "n_eval_stories": 5, "modules": ["model.layers.9.mlp"]}})
    with pytest.raises(UsageError, match="no module 'model.layers.9.mlp'"):
        build_target(config.target, torch.device("cpu"), lambda m: None)


def test_spd_lm_mlp_run_writes_the_contexts_its_subcomponents_matter_for(micro_lm, tmp_path):
    import json

    from tunelens.registry import get_experiment
    from tunelens.runs import run_experiment

    folder, _ = micro_lm
    experiment = get_experiment("lm_mlp")
    config = experiment.load_config(assignments=[
        f"target.model={folder}", "target.seq_len=16", "target.n_train_stories=40", "target.n_eval_stories=10",
        "target.modules=[model.layers.0.mlp.up_proj, model.layers.0.mlp.down_proj]", "optim.steps=5",
        "optim.batch_size=4", "eval.batch_size=4", "C=10", "optim.faithfulness_warmup_steps=2"])
    run_experiment(experiment, config, tmp_path, quiet=True)
    for name in ("model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"):
        rows = json.loads((tmp_path / f"top_tokens_{name}.json").read_text())
        assert (tmp_path / "figures" / f"top_tokens_{name}.png").is_file()
        assert rows  # five steps from initialisation leave many subcomponents alive
        for row in rows:  # each shown position ends with its current token in brackets
            assert 0 <= row["subcomponent"] < 10 and row["n_tokens_active"] > 0
            assert all(text.endswith("]") and "[" in text for text in row["top_tokens"])
