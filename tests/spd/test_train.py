import json
from contextlib import nullcontext

import pytest
import torch

from tunelens.runs import seed_everything
from tunelens.schedules import schedule_value
from tunelens.spd import metrics
from tunelens.spd.component_model import module_key
from tunelens.spd.configs import SpdConfig
from tunelens.spd.evaluate import evaluate, ground_truth_match, pattern_errors
from tunelens.spd.losses import OUTPUT_LOSSES, loss_terms, prepare, subset_routing, total_loss
from tunelens.spd.reload import load_decomposition
from tunelens.spd.targets import CiPattern, build_target, tms
from tunelens.spd.targets.tms import TmsTargetConfig
from tunelens.spd.train import build_component_model, make_optimizer, optimize, optimizer_step

MICRO_TARGET = TmsTargetConfig(train_steps=300, train_batch_size=256)


def micro_config(**changes) -> SpdConfig:
    base = {"target": MICRO_TARGET, "C": 8, "optim": {"steps": 150, "batch_size": 256, "lr": 3e-3},
            "eval": {"batch_size": 512}, "loss": {"faithfulness": 1.0, "stochastic_recon_subset": 1.0,
                                                  "ci_masked_recon": 1.0, "pgd_recon": 1.0}}
    base.update(changes)
    return SpdConfig.model_validate(base)


def fixed_batch_total(model, target, config, x):
    with torch.no_grad():
        torch.manual_seed(123)  # same mask noise before and after training
        return float(total_loss(loss_terms(model, prepare(model, x), config, OUTPUT_LOSSES["mse"], 0.0), config.loss))


def test_short_tms_run_lowers_total_loss():
    config = micro_config()
    seed_everything(0)
    target = build_target(config.target, torch.device("cpu"), lambda m: None)
    model = build_component_model(config, target)
    x = target.sample_batch(1024)
    before = fixed_batch_total(model, target, config, x)
    final = optimize(model, target, config)
    after = fixed_batch_total(model, target, config, x)
    assert after < 0.5 * before, (before, after)
    assert set(final) >= {"layers", "identity_ci_error", "loss_pgd_recon", "loss_stochastic_recon_subset",
                          "loss_total", "unmasked_recon"}
    assert 0 <= final["layers"]["linear1"]["mmcs"] <= 1
    comps = model.component("linear1")  # the summary counts the final subcomponents at the configured fraction
    norms = metrics.subcomponent_norms(comps.V.detach(), comps.U.detach())
    assert final["layers"]["linear1"]["n_large"] == metrics.n_large(norms, config.eval.large_norm_frac)


def test_same_seed_same_numbers():
    def once():
        config = micro_config(optim={"steps": 20, "batch_size": 128})
        seed_everything(7)
        target = build_target(config.target, torch.device("cpu"), lambda m: None)
        model = build_component_model(config, target)
        return optimize(model, target, config)["loss_total"]

    assert once() == once()


class RecordingRun:
    """The parts of a Run that `optimize` uses, keeping the logged metrics."""

    def __init__(self):
        self.records: list[tuple[int, dict]] = []

    def log(self, message: str) -> None:
        pass

    def progress(self, total: int, label: str):
        return nullcontext()

    def log_metrics(self, step: int, record: dict) -> None:
        self.records.append((step, record))


def test_learning_rate_follows_the_configured_schedule():
    config = micro_config(optim={"steps": 10, "batch_size": 32, "lr": 2e-3,
                                 "lr_schedule": {"kind": "cosine", "warmup_frac": 0.2, "final_frac": 0.1}},
                          eval={"batch_size": 32, "log_every": 1})
    target = build_target(config.target, torch.device("cpu"), lambda m: None)
    run = RecordingRun()
    optimize(build_component_model(config, target), target, config, run)  # type: ignore[arg-type]
    lrs = [record["lr"] for _, record in run.records if "lr" in record]
    expected = [schedule_value(config.optim.lr_schedule, 2e-3, step, 10) for step in range(10)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[:2] == pytest.approx([1e-3, 2e-3]) and lrs[-1] == pytest.approx(2e-4)  # 2 warm-up steps; 10 % at the end


@pytest.mark.parametrize(("progress", "scale"), [(0.0, 1 / 5), (0.3, 4 / 5), (0.6, 1.0)])
def test_importance_coefficient_follows_its_schedule(progress, scale):
    config = micro_config(optim={"steps": 10, "batch_size": 64},
                          importance_minimality={"coeff_schedule": {"warmup_frac": 0.5}})  # 5 warm-up steps
    seed_everything(0)
    target = build_target(config.target, torch.device("cpu"), lambda m: None)
    model = build_component_model(config, target)
    loss, terms, _ = optimizer_step(model, target, config, make_optimizer(model, config), OUTPUT_LOSSES["mse"],
                                    progress)
    weights = config.loss.model_dump()
    expected = sum(weights[name] * value.item() * (scale if name == "importance_minimality" else 1.0)
                   for name, value in terms.items())
    assert terms["importance_minimality"].item() > 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_target_is_cached_by_config(monkeypatch):
    from tunelens.spd.targets import tms

    calls = []
    real = tms.train_represented
    monkeypatch.setattr(tms, "train_represented", lambda *args: calls.append(1) or real(*args))
    first = build_target(micro_config().target, torch.device("cpu"), lambda message: None)
    second = build_target(micro_config().target, torch.device("cpu"), lambda message: None)
    assert len(calls) == 1  # trained once, then read back from the cache
    assert torch.equal(first.model.linear1.weight, second.model.linear1.weight)


def test_target_training_retries_until_every_feature_is_represented(monkeypatch):
    calls = []

    def fake_train(config, seed):
        calls.append(seed)
        W = torch.ones(config.n_hidden, config.n_features)
        if len(calls) == 1:
            W[:, 2] = 0.0  # first attempt leaves feature 2 out
        return W, torch.zeros(config.n_features), 0.0

    monkeypatch.setattr(tms, "train_tms_weights", fake_train)
    _, info = tms.train_represented(MICRO_TARGET, lambda m: None)
    assert calls == [0, 1]
    assert info["target_attempts"] == 2 and info["target_features_represented"] == 5


def test_subset_routing_routes_between_one_and_all_layers():
    routing = subset_routing(torch.Size([4000]), 3, torch.device("cpu"))
    counts = routing.sum(0)
    assert routing.shape == (3, 4000) and counts.min() >= 1 and counts.max() <= 3
    assert set(counts.tolist()) == {1, 2, 3}  # k is uniform on {1, 2, 3}


def test_pattern_errors_join_a_groups_layers_and_use_each_patterns_kind():
    # a group of two layers: 4 one-hot inputs, 4 subcomponents per layer; features 0 and 1 are computed in
    # layer a (by its subcomponents 2 and 0), features 2 and 3 in layer b (by its 1 and 2).
    a, b = torch.zeros(4, 4), torch.zeros(4, 4)
    a[0, 2] = a[1, 0] = b[2, 1] = b[3, 2] = 1.0
    assert pattern_errors({"a": a, "b": b}, [CiPattern(("a", "b"), "identity", 4)], 0.1) == {"a+b": 0}
    # Either layer alone misses an identity on 2 of the 4 inputs (their best diagonal entries are 0).
    alone = [CiPattern(("a",), "identity", 4), CiPattern(("b",), "identity", 4)]
    assert pattern_errors({"a": a, "b": b}, alone, 0.1) == {"a": 2, "b": 2}
    # Dense: one column on for every input in c and two in d make three always-on columns when joined.
    c, d = torch.zeros(4, 2), torch.zeros(4, 2)
    c[:, 0] = d[:, 0] = d[:, 1] = 1.0
    assert pattern_errors({"c": c, "d": d}, [CiPattern(("c", "d"), "dense", 3)], 0.1) == {"c+d": 0}
    assert pattern_errors({"c": c, "d": d}, [CiPattern(("c", "d"), "dense", 2)], 0.1) == {"c+d": 4}  # 1 column too many


def test_resid_mlp_patterns_are_per_layer():
    from tunelens.spd.targets.resid_mlp import ResidMlp, ResidMlpTargetConfig, random_unit_embedding

    config = ResidMlpTargetConfig(n_features=6, d_embed=8, d_mlp=3, n_layers=2)
    weights = ResidMlp(6, 8, 3, 2, random_unit_embedding(6, 8, torch.Generator().manual_seed(0))).state_dict()
    target = build_target(config, torch.device("cpu"), lambda m: None, weights)
    assert target.ci_patterns == [CiPattern(("layers.0.mlp_in",), "identity", 6),
                                  CiPattern(("layers.0.mlp_out",), "dense", 3),
                                  CiPattern(("layers.1.mlp_in",), "identity", 6),
                                  CiPattern(("layers.1.mlp_out",), "dense", 3)]


def test_identity_variant_scores_its_hidden_layer_against_a_dense_pattern():
    config = micro_config(target=MICRO_TARGET.model_copy(update={"n_hidden_layers": 1}), loss={},
                          eval={"batch_size": 64})
    target = build_target(config.target, torch.device("cpu"), lambda m: None)
    model = build_component_model(config, target)
    assert model.names == ["linear1", "hidden_layers.0", "linear2"]
    assert torch.equal(target.model.hidden_layers[0].weight, torch.eye(2))
    assert CiPattern(("hidden_layers.0",), "dense", 2) in target.ci_patterns  # a 2x2 identity needs 2 pieces
    last = model.ci_fns[module_key("hidden_layers.0")].layers[-1]  # importance = this layer's bias, input-free
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[:2] = 1.0  # subcomponents 0 and 1 always on: the dense pattern
    errors = evaluate(model, target, config, OUTPUT_LOSSES["mse"], 1.0)["ci_pattern_errors"]
    assert errors["hidden_layers.0"] == 0
    with torch.no_grad():
        last.bias[5] = 0.5  # a third subcomponent half on for each of the 5 one-hot inputs
    errors = evaluate(model, target, config, OUTPUT_LOSSES["mse"], 1.0)["ci_pattern_errors"]
    assert errors["hidden_layers.0"] == 5


def test_finished_run_reloads_with_identical_results(tmp_path):
    """tms_5-2 ties linear2 to linear1: the checkpoint holds one set of subcomponents, and the reloaded linear2
    uses linear1's, transposed."""
    from tunelens.registry import get_experiment
    from tunelens.runs import load_tensors, run_experiment

    experiment = get_experiment("tms_5-2")
    config = experiment.load_config(assignments=["optim.steps=20", "optim.batch_size=64", "eval.batch_size=64",
                                                 "target.train_steps=100"])
    assert config.tie_components
    run_experiment(experiment, config, tmp_path, quiet=True)
    saved = load_tensors(tmp_path / "components.safetensors")
    assert "components.linear1.V" in saved and not any(k.startswith("components.linear2") for k in saved)
    assert any(k.startswith("ci_fns.linear2") for k in saved)  # each layer keeps its own importance function
    loaded_config, target, model = load_decomposition(tmp_path)
    assert loaded_config == config
    first, second = model.component("linear1"), model.component("linear2")
    assert torch.equal(first.V, saved["components.linear1.V"]) and torch.equal(second.V, first.U.T)
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name, (mmcs, ml2r) in ground_truth_match(model, target).items():
        assert mmcs == pytest.approx(summary["layers"][name]["mmcs"], abs=1e-6)
        assert ml2r == pytest.approx(summary["layers"][name]["ml2r"], abs=1e-6)


def test_run_from_before_tying_reloads_untied(tmp_path):
    """Runs written before `tie_components` existed have no such key and separate linear2 parameters, which
    reload as trained: linear2's match to the target is the run's, not linear1's."""
    import yaml

    from tunelens.registry import get_experiment
    from tunelens.runs import run_experiment

    experiment = get_experiment("tms_5-2")
    config = experiment.load_config(assignments=["optim.steps=5", "optim.batch_size=32", "eval.batch_size=32",
                                                 "target.train_steps=50", "tie_components=false"])
    run_experiment(experiment, config, tmp_path, quiet=True)
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del raw["tie_components"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    loaded_config, target, model = load_decomposition(tmp_path)
    assert loaded_config.tie_components is False
    first, second = model.component("linear1"), model.component("linear2")
    assert "components.linear2.V" in dict(model.named_parameters())
    assert not torch.allclose(second.V, first.U.T)
    summary = json.loads((tmp_path / "summary.json").read_text())
    mmcs, _ = ground_truth_match(model, target)["linear2"]
    assert mmcs == pytest.approx(summary["layers"]["linear2"]["mmcs"], abs=1e-6)


def test_target_attempt_is_abandoned_early_only_when_a_column_is_still_too_weak():
    base = MICRO_TARGET.model_copy(update={"train_steps": 40})
    W_full, b_full, _ = tms.train_tms_weights(base, 3)
    kept = base.model_copy(update={"abandon_at_frac": 0.25, "abandon_below_norm": 0.0})  # never below 0: goes on
    W_kept, b_kept, _ = tms.train_tms_weights(kept, 3)
    assert torch.equal(W_kept, W_full) and torch.equal(b_kept, b_full)
    dropped = base.model_copy(update={"abandon_at_frac": 0.25, "abandon_below_norm": 1e3})  # always too weak
    W_dropped, _, _ = tms.train_tms_weights(dropped, 3)
    W_ten, _, _ = tms.train_tms_weights(base.model_copy(update={"train_steps": 10}), 3)
    assert torch.equal(W_dropped, W_ten)  # stopped after 10 of 40 steps
    assert not torch.equal(W_dropped, W_full)


def test_abandon_norm_above_the_represented_norm_is_refused():
    with pytest.raises(ValueError, match="abandon_below_norm"):
        TmsTargetConfig(abandon_at_frac=0.2, abandon_below_norm=0.6, min_feature_norm=0.5)
