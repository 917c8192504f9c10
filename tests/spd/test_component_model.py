import copy

import pytest
import torch
from torch import nn

from tunelens.spd.component_model import ComponentModel, LayerMask, distinct_rows
from tunelens.spd.losses import faithfulness_loss
from tunelens.spd.sigmoids import importance_pair
from tunelens.spd.targets import call_module, freeze


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 4, bias=False)

    def forward(self, ids):
        return self.fc2(torch.relu(self.fc1(self.embed(ids))))


def make_model(ci_fn_type="mlp"):
    torch.manual_seed(0)
    target = freeze(TwoLayer())
    C = {"embed": 7, "fc1": 3, "fc2": 9}
    if ci_fn_type != "mlp":
        C.pop("embed")
    return ComponentModel(target, call_module, C, ci_fn_type, [4]), target


def test_all_masks_one_with_delta_reproduces_target_exactly():
    model, target = make_model()
    ids = torch.randint(0, 11, (3, 8))
    expected = target(ids)
    masks = {n: LayerMask(mask=torch.ones(3, 8, model.component(n).C), delta_mask=torch.ones(3, 8))
             for n in model.names}
    out = model.forward_masked(ids, masks, model.weight_deltas())
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(model.forward_masked(ids, {n: LayerMask(mask=masks[n].mask) for n in model.names}),
                              expected, atol=1e-3)  # without the delta the random components are not the target


def test_components_equal_to_the_weights_reproduce_target_without_delta():
    model, target = make_model()
    with torch.no_grad():  # make fc2 exactly representable: rank ≤ 4 ≤ C = 9
        U, S, Vh = torch.linalg.svd(target.fc2.weight, full_matrices=False)
        comps = model.component("fc2")
        comps.V.zero_()
        comps.U.zero_()
        comps.V[:, :4] = (Vh.T * S)
        comps.U[:4] = U.T
    assert faithfulness_loss({"fc2": model.weight_deltas()["fc2"]}) < 1e-10
    x = torch.randint(0, 11, (2, 5))
    out = model.forward_masked(x, {"fc2": LayerMask(mask=torch.ones(2, 5, 9))})
    assert torch.allclose(out, target(x), atol=1e-5)


def test_plain_call_is_target_and_cache_holds_layer_inputs():
    model, target = make_model()
    ids = torch.randint(0, 11, (2, 3))
    out, cache = model.forward_target(ids)
    assert torch.equal(out, target(ids))
    assert torch.equal(cache["embed"], ids)
    assert torch.allclose(cache["fc1"], target.embed(ids))
    assert torch.allclose(cache["fc2"], torch.relu(target.fc1(target.embed(ids))))


def is_plain(module: nn.Module) -> bool:
    """No hooks, and the class's own forward (nothing set on the instance)."""
    return (not module._forward_hooks and not module._forward_pre_hooks and "forward" not in vars(module)
            and module.forward.__func__ is type(module).forward)


def test_target_is_plain_between_passes_and_can_be_decomposed_again():
    model, target = make_model()
    untouched = copy.deepcopy(target)
    ids = torch.randint(0, 11, (3, 8))
    zeros = {n: LayerMask(mask=torch.zeros(3, 8, model.component(n).C)) for n in model.names}
    masked = model.forward_masked(ids, zeros)
    assert not torch.allclose(masked, untouched(ids))  # the layers were replaced during the pass...
    model.forward_target(ids)
    assert all(is_plain(target.get_submodule(n)) for n in model.names)  # ...and are plain after it
    assert torch.equal(target(ids), untouched(ids))

    second = ComponentModel(target, call_module, {"fc1": 2}, "mlp", [3])
    ones = {"fc1": LayerMask(mask=torch.ones(3, 8, 2), delta_mask=torch.ones(3, 8))}
    assert torch.allclose(second.forward_masked(ids, ones, second.weight_deltas()), untouched(ids), atol=1e-5)
    assert torch.equal(model.forward_masked(ids, zeros), masked)  # the first model is unaffected by the second
    assert torch.equal(target(ids), untouched(ids))


def test_hooks_are_removed_when_a_pass_fails():
    model, target = make_model()
    wrong = {"fc1": LayerMask(mask=torch.ones(3, 8, 99))}  # fc1 has 3 subcomponents
    with pytest.raises(RuntimeError):
        model.forward_masked(torch.randint(0, 11, (3, 8)), wrong)
    assert all(is_plain(target.get_submodule(n)) for n in model.names)


def test_masks_for_layers_that_are_not_decomposed_are_an_error():
    model, _ = make_model("vector_mlp")  # embed is not decomposed here
    with pytest.raises(KeyError, match="embed"):
        model.forward_masked(torch.randint(0, 11, (2, 3)), {"embed": LayerMask(mask=torch.ones(2, 3, 7))})


def test_only_components_and_ci_fns_train_and_shapes():
    for kind in ["mlp", "vector_mlp", "shared_mlp"]:
        model, target = make_model(kind)
        assert all(not p.requires_grad for p in target.parameters())
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all(n.startswith(("components.", "ci_fns.")) for n in trainable)
        _, cache = model.forward_target(torch.randint(0, 11, (2, 3)))
        imp = model.importances(cache)
        assert imp.lower["fc2"].shape == (2, 3, 9)
        assert imp.upper["fc1"].shape == (2, 3, 3)


def test_routing_mask_selects_components_per_example():
    model, target = make_model()
    ids = torch.randint(0, 11, (4, 3))
    zeros = {"fc1": LayerMask(mask=torch.zeros(4, 3, 3), routing=torch.tensor([True, False, True, False])[:, None]
                              .expand(4, 3))}
    out = model.forward_masked(ids, zeros)
    expected = target(ids)
    assert torch.allclose(out[1], expected[1]) and torch.allclose(out[3], expected[3])
    assert not torch.allclose(out[0], expected[0])


def test_subcomponent_matrices_sum_to_component_weight():
    model, _ = make_model()
    for name in model.names:
        comps = model.component(name)
        assert torch.allclose(comps.subcomponent_matrices().sum(0), comps.weight(), atol=1e-5)


@pytest.mark.parametrize("hidden", [[5, 3], [5], []])
@pytest.mark.parametrize("example_major", [True, False])
def test_scalar_mlp_ci_is_one_small_mlp_per_subcomponent(hidden, example_major, monkeypatch):
    from tunelens.spd.ci import ScalarMlpCi

    monkeypatch.setattr(ScalarMlpCi, "EXAMPLE_MAJOR_MAX_C", 4 if example_major else 3)  # both layouts, C = 4
    torch.manual_seed(0)
    ci = ScalarMlpCi(C=4, d_in=7, hidden=hidden)
    for layer in ci.layers:
        torch.nn.init.normal_(layer.bias)  # non-zero biases, so each is checked too
    inner = torch.randn(2, 6, 4, requires_grad=True)
    out = ci(inner)
    assert out.shape == (2, 6, 4)
    expected = []
    for c in range(4):  # subcomponent c: its own 1 -> hidden... -> 1 MLP (GELU between) on its scalar alone
        h = inner[..., c:c + 1]
        for i, layer in enumerate(ci.layers):
            h = h @ layer.weight[c] + layer.bias[c]
            if i < len(ci.layers) - 1:
                h = torch.nn.functional.gelu(h)
        expected.append(h.squeeze(-1))
    expected = torch.stack(expected, -1)
    assert torch.allclose(out, expected, atol=1e-6)
    params = [inner, *ci.parameters()]
    grads = torch.autograd.grad(out.pow(3).sum(), params)
    expected_grads = torch.autograd.grad(expected.pow(3).sum(), params)
    for got, want in zip(grads, expected_grads):
        assert torch.allclose(got, want, atol=1e-5)


class TiedPair(nn.Module):
    """ReLU(Wᵀ W x + b), the TMS shape: the second layer's weight is the first's transpose."""

    def __init__(self):
        super().__init__()
        self.linear1 = nn.Linear(5, 2, bias=False)
        self.linear2 = nn.Linear(2, 5)
        with torch.no_grad():
            self.linear2.weight.copy_(self.linear1.weight.T)

    def forward(self, x):
        return torch.relu(self.linear2(self.linear1(x)))


def test_tied_layers_share_one_set_of_subcomponents():
    torch.manual_seed(0)
    target = freeze(TiedPair())
    model = ComponentModel(target, call_module, {"linear1": 4, "linear2": 4}, "mlp", [3], tied={"linear2": "linear1"})
    first, second = model.component("linear1"), model.component("linear2")
    assert torch.equal(second.V, first.U.T) and torch.equal(second.U, first.V.T)
    assert torch.equal(second.weight(), first.weight().T)  # exact: the follower transposes the source's product
    deltas = model.weight_deltas()  # so the residuals of the two layers are exact transposes as well
    assert torch.equal(deltas["linear2"], deltas["linear1"].T)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "components.linear1.V" in names and not any(n.startswith("components.linear2") for n in names)
    assert any(n.startswith("ci_fns.linear2") for n in names)  # each layer keeps its own importance function

    x = torch.rand(6, 5)
    masks = {n: LayerMask(mask=torch.ones(6, 4), delta_mask=torch.ones(6)) for n in model.names}
    assert torch.allclose(model.forward_masked(x, masks, model.weight_deltas()), target(x), atol=1e-6)
    # A loss through linear2 alone moves linear1's parameters (they are linear2's, transposed).
    model.forward_masked(x, {"linear2": LayerMask(mask=torch.ones(6, 4))}).sum().backward()
    assert first.V.grad is not None and first.V.grad.abs().sum() > 0


def test_tying_checks_shapes_and_counts():
    with pytest.raises(ValueError, match="transposed"):  # a 4x5 weight cannot be tied to a 5x6 one
        ComponentModel(freeze(TwoLayer()), call_module, {"fc1": 3, "fc2": 3}, "mlp", [4], tied={"fc2": "fc1"})
    with pytest.raises(ValueError, match="same number"):
        ComponentModel(freeze(TiedPair()), call_module, {"linear1": 3, "linear2": 4}, "mlp", [4],
                       tied={"linear2": "linear1"})


@pytest.mark.parametrize("ci_fn_type", ["mlp", "vector_mlp"])
def test_importances_once_per_distinct_input_match_every_row(ci_fn_type):
    """Zero rows (and repeated tokens) are evaluated once and gathered back: same importances, same gradients."""
    model, _ = make_model(ci_fn_type)
    ids = torch.tensor([[3, 3, 0, 5], [5, 3, 1, 1]])  # repeated tokens
    _, layer_inputs = model.forward_target(ids)
    layer_inputs["fc1"] = layer_inputs["fc1"].clone()
    layer_inputs["fc1"][0, :3] = 0  # three all-zero rows
    layer_inputs["fc1"][1, 2] = 0
    layer_inputs["fc2"] = layer_inputs["fc2"].clone()
    layer_inputs["fc2"][1] = 0

    def every_row(name):
        comps, ci_fn = model.component(name), model.ci_fns[name]
        inner = comps.inner_acts(layer_inputs[name])
        lower, upper = importance_pair(ci_fn(inner if ci_fn.uses_inner_acts else layer_inputs[name]),
                                       model.sigmoid_type)
        return lower, upper

    weights = {n: torch.randn(*layer_inputs[n].shape[:2], model.component(n).C) for n in model.names}
    got = model.importances(layer_inputs)
    loss = sum(((got.lower[n] + got.upper[n] ** 2) * weights[n]).sum() for n in model.names)
    params = [*model.ci_fns.parameters()] + ([model.component("fc1").V] if ci_fn_type == "mlp" else [])
    grads = torch.autograd.grad(loss, params)
    total = 0.0
    for n in model.names:
        lower, upper = every_row(n)
        assert got.lower[n].shape == lower.shape
        assert torch.allclose(got.lower[n], lower, atol=1e-6) and torch.allclose(got.upper[n], upper, atol=1e-6)
        total = total + ((lower + upper ** 2) * weights[n]).sum()
    expected = torch.autograd.grad(total, params)
    for g, e in zip(grads, expected):
        assert torch.allclose(g, e, atol=1e-5)


def test_distinct_rows_keeps_one_zero_row_and_maps_every_row_to_it():
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    rows, index = distinct_rows(x)
    assert torch.equal(rows, torch.tensor([[1.0, 2.0], [0.0, 3.0], [0.0, 0.0]]))
    assert index.tolist() == [2, 0, 2, 1, 2]
    assert torch.equal(rows[index], x)
    same, none = distinct_rows(torch.tensor([[0.0, 0.0], [1.0, 2.0]]))  # nothing to drop: the input itself
    assert none is None and same.shape == (2, 2)
