import pytest
import torch

from tunelens.config import UsageError
from tunelens.lm.tiny import tiny_causal_lm
from tunelens.routing.adapters import (
    ROUTE_BAD,
    ROUTE_BOTH,
    ROUTE_GOOD,
    DualAdapterLayer,
    DualAdapterSettings,
    adapter_layers,
    add_dual_adapters,
    groups_to_step,
    load_adapters,
    param_groups,
    routed,
    save_adapters,
    scales,
)

KINDS = ["mlp", "lora"]


def micro_model(seed: int = 0):
    torch.manual_seed(seed)
    return tiny_causal_lm(vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_mlp=32, max_seq_len=16).eval()


def adapted(kind: str, seed: int = 0, perturb: bool = True, **kwargs):
    """kind "finetune": no good branch, the last layer's own weights train as the good parameters."""
    model = micro_model(seed)
    if kind == "finetune":
        kind, kwargs = "mlp", {"good_dim": 0, "base_layers": [1], **kwargs}
    settings = DualAdapterSettings(kind=kind, **{"good_dim": 3, "bad_dim": 2, "alpha": 4.0, **kwargs})
    add_dual_adapters(model, settings)
    if perturb:  # zero-initialised up-projections would hide every gradient of the down-projections
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".branches." in name:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model, settings


def logits(model, ids):
    return model(input_ids=ids).logits


IDS = torch.tensor([[1, 5, 7, 9, 2, 4], [3, 3, 8, 1, 0, 6], [4, 2, 2, 7, 1, 1], [9, 8, 7, 6, 5, 4]])


@pytest.mark.parametrize("kind", KINDS)
def test_zero_init_leaves_logits_unchanged(kind):
    base = micro_model()
    model, _ = adapted(kind, perturb=False)
    assert torch.equal(logits(base, IDS), logits(model, IDS))


@pytest.mark.parametrize("kind", KINDS)
def test_placement_last_half_and_groups(kind):
    model, settings = adapted(kind)
    wrapped = [name for name, m in model.named_modules() if isinstance(m, DualAdapterLayer)]
    assert wrapped and all(name.startswith("model.layers.1.") for name in wrapped)  # 2 layers: only layer 1
    assert len(wrapped) == (1 if kind == "mlp" else 7)
    groups = param_groups(model)
    assert set(groups) == {"good", "bad"}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(groups["good"]) + len(groups["bad"])
    if kind == "lora":  # ranks differ, scaling alpha / r per branch
        layer = next(adapter_layers(model))
        assert layer.branches["good"].lora_A.weight.shape[0] == 3 and layer.branches["bad"].lora_A.weight.shape[0] == 2
        assert layer.scaling == {"good": 4.0 / 3, "bad": 4.0 / 2}


def test_unknown_target_is_a_usage_error():
    with pytest.raises(UsageError, match="no linear module 'qkv'"):
        add_dual_adapters(micro_model(), DualAdapterSettings(kind="lora", targets=["qkv"]))
    with pytest.raises(UsageError, match="out of range"):
        add_dual_adapters(micro_model(), DualAdapterSettings(layers=[5]))


@pytest.mark.parametrize("kind", KINDS)
def test_scale_zero_equals_removing_the_branch(kind):
    model, _ = adapted(kind)
    with scales(model, 1.0, 0.0):
        without_bad = logits(model, IDS)
    # the same model with the bad branch deleted from every wrapper
    for layer in adapter_layers(model):
        del layer.branches["bad"]
    assert torch.equal(without_bad, logits(model, IDS))
    for layer in adapter_layers(model):
        del layer.branches["good"]
    assert torch.equal(logits(micro_model(), IDS), logits(model, IDS))  # no branches: the base model


def routed_grads(model, ids, routes, ablate_good=False):
    """One backward pass of the summed per-row losses with the rows routed."""
    model.zero_grad(set_to_none=True)
    with routed(model, routes, ablate_good):
        out = model(input_ids=ids, labels=None).logits
        losses = torch.nn.functional.cross_entropy(out[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        losses.mean(-1).sum().backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters() if p.requires_grad}


def reference_grads(model, ids, routes, ablate_good=False):
    """One row at a time, the full gradient, masked to the groups the row may update (labeled-good rows are run
    with the bad branch at scale 0, and with `ablate_good` labeled-bad rows with the good branch at scale 0)."""
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    for row, route in zip(ids, routes.tolist()):
        model.zero_grad(set_to_none=True)
        good_scale = 0.0 if ablate_good and route == ROUTE_BAD else 1.0
        with scales(model, good_scale, 0.0 if route == ROUTE_GOOD else 1.0):
            out = model(input_ids=row[None]).logits
            loss = torch.nn.functional.cross_entropy(out[0, :-1], row[1:])
            loss.backward()
        for name, p in model.named_parameters():
            if not p.requires_grad or p.grad is None:
                continue
            branch = "bad" if ".branches.bad." in name else "good"  # trained base weights are good
            if (route == ROUTE_BAD and branch == "good") or (route == ROUTE_GOOD and branch == "bad"):
                continue
            total[name] += p.grad
    return total


@pytest.mark.parametrize(("kind", "ablate_good"), [("mlp", False), ("lora", False), ("finetune", False),
                                                   ("mlp", True), ("lora", True)])
def test_batched_routing_equals_per_example_reference(kind, ablate_good):
    # both layers adapted: a bad branch also learns through the frozen good branches downstream of it
    model, _ = adapted(kind, layers=[0, 1])
    routes = torch.tensor([ROUTE_BOTH, ROUTE_BAD, ROUTE_GOOD, ROUTE_BAD])
    batched = routed_grads(model, IDS, routes, ablate_good)
    reference = reference_grads(model, IDS, routes, ablate_good)
    assert all(batched[n].abs().sum() > 0 for n in batched)  # every branch got some gradient
    for name in batched:
        torch.testing.assert_close(batched[name], reference[name], rtol=1e-4, atol=1e-6)
    # and routing matters: without it the good branch would also learn from the labeled-bad rows
    plain = routed_grads(model, IDS, torch.full((4,), ROUTE_BOTH))
    good = next(n for n in batched if ".branches.bad." not in n)
    assert not torch.allclose(plain[good], batched[good])
    if ablate_good:  # the labeled-bad rows' forward pass differs, so the bad branch learns differently
        bad = next(n for n in batched if ".branches.bad." in n)
        assert not torch.allclose(routed_grads(model, IDS, routes)[bad], batched[bad])


@pytest.mark.parametrize("kind", [*KINDS, "finetune"])
def test_labeled_steps_leave_the_other_branch_bit_identical(kind):
    model, _ = adapted(kind)
    groups = param_groups(model)
    optimizers = {name: torch.optim.AdamW(params, lr=0.1) for name, params in groups.items()}
    for route, frozen in ((ROUTE_BAD, "good"), (ROUTE_GOOD, "bad"), (ROUTE_BOTH, None)):
        before = {b: [p.detach().clone() for p in groups[b]] for b in ("good", "bad")}
        routes = torch.full((2,), route)
        routed_grads(model, IDS[:2], routes)
        for name in groups_to_step(routes.tolist()):
            optimizers[name].step()
        for branch in ("good", "bad"):
            same = all(torch.equal(a, p) for a, p in zip(before[branch], groups[branch]))
            assert same == (branch == frozen), (route, branch)


def test_finetune_variant_trains_the_chosen_layers_as_good():
    model, _ = adapted("finetune", layers=[0, 1])
    groups = param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].split(".")[2] for p in groups["good"]} == {"1"}  # layer 1's own weights, nothing else
    assert not any(".branches." in names[id(p)] for p in groups["good"])
    assert all(".branches.bad." in names[id(p)] for p in groups["bad"])


def test_row_parameter_gate_blocks_parameter_gradient_rows_but_not_the_input_path():
    from tunelens.lm.trainer import row_parameter_gate

    torch.manual_seed(0)
    first, second = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    x = torch.randn(2, 3)

    def grads(gate):
        first.zero_grad(), second.zero_grad()
        with row_parameter_gate([second], gate):
            out = second(first(x))
        out.pow(2).sum(-1)[1].backward()  # row 1's loss only
        return first.weight.grad.clone(), second.weight.grad

    open_first, open_second = grads(torch.tensor([1.0, 1.0]))
    gated_first, gated_second = grads(torch.tensor([1.0, 0.0]))
    assert open_second.abs().sum() > 0 and torch.equal(gated_second, torch.zeros_like(gated_second))
    torch.testing.assert_close(gated_first, open_first)  # gradient still flows through to the first layer
    plain = second(first(x))
    with row_parameter_gate([second], torch.tensor([1.0, 0.0])):
        torch.testing.assert_close(second(first(x)), plain)  # values unchanged
    norm = torch.nn.LayerNorm(4)  # a module that is not linear: re-run with its parameters detached
    with torch.no_grad():
        norm.weight.mul_(2.0)
    norm.zero_grad(), first.zero_grad()
    with row_parameter_gate([norm], torch.tensor([0.0, 1.0])):
        norm(first(x)).pow(2).sum(-1)[0].backward()  # row 0 is gated out
    assert torch.equal(norm.weight.grad, torch.zeros_like(norm.weight)) and first.weight.grad.abs().sum() > 0


def test_groups_to_step():
    assert groups_to_step([ROUTE_BAD]) == {"bad"}
    assert groups_to_step([ROUTE_GOOD]) == {"good"}
    assert groups_to_step([ROUTE_BAD, ROUTE_GOOD]) == {"good", "bad"}
    assert groups_to_step([ROUTE_BOTH]) == {"good", "bad"}


@pytest.mark.parametrize("kind", [*KINDS, "finetune"])
def test_save_load_round_trip(kind, tmp_path):
    model, settings = adapted(kind, layers=[0])
    if kind == "finetune":  # the trained base weights are saved with the branches
        with torch.no_grad():
            model.model.layers[1].mlp.down_proj.weight.add_(0.5)
    expected = logits(model, IDS)
    save_adapters(model, settings, tmp_path / "adapters")
    loaded = load_adapters(micro_model(), tmp_path / "adapters")
    assert torch.equal(expected, logits(loaded, IDS))
    with scales(loaded, 0.0, 0.0):  # branches off: the base model, unless its own weights were trained
        assert torch.equal(logits(micro_model(), IDS), logits(loaded, IDS)) == (kind != "finetune")


def test_missing_adapters_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no dual adapters"):
        load_adapters(micro_model(), tmp_path)
