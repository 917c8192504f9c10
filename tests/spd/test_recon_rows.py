"""The reconstruction losses' shortcuts (inert rows dropped, the first / replaced layer's inner activations and
target output reused) compute the same losses and gradients as masked passes over the whole batch."""

import pytest
import torch
from torch import nn

from tunelens.spd.component_model import ComponentModel, LayerMask
from tunelens.spd.components import EmbeddingComponents, LinearComponents
from tunelens.spd.configs import Pgd
from tunelens.spd.losses import (
    active_rows,
    ci_masked_recon_loss,
    mse_output_loss,
    pgd_recon_loss,
    prepare,
    stochastic_recon_layerwise_loss,
    stochastic_recon_loss,
)
from tunelens.spd.targets import call_module, freeze

NOISE, DELTA_NOISE = 0.3, 0.6  # the fixed "random" draws both sides use


class Mlp(nn.Module):
    """fc1 without bias, so an all-zero input row reaches fc2 as zero too; fc2 with a bias."""

    def __init__(self, fc1_bias=False):
        super().__init__()
        self.fc1 = nn.Linear(6, 5, bias=fc1_bias)
        self.fc2 = nn.Linear(5, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_active_rows_drops_rows_where_every_layer_input_is_zero():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0], [0.0], [2.0], [0.0]])
    assert active_rows({"a": a, "b": b}, 4).tolist() == [1, 2]
    assert active_rows({"a": a}, 4).tolist() == [1]
    assert active_rows({"a": torch.zeros(4, 2)}, 4) is None  # nothing active: keep the batch as it is
    assert active_rows({"a": torch.ones(4, 2)}, 4) is None  # all active
    assert active_rows({"a": torch.zeros(4, 3, 2)}, 4) is None  # sequences: positions interact, keep every row
    assert active_rows({"a": torch.zeros(4, dtype=torch.long)}, 4) is None  # token ids


def test_masked_forward_from_the_target_output_equals_the_weight_delta_form():
    torch.manual_seed(0)
    layer = nn.Linear(6, 5)
    comps = LinearComponents(layer, 3)
    x = torch.randn(7, 6)
    inner, mask, delta = comps.inner_acts(x), torch.rand(7, 3), torch.rand(7)
    weight_delta = comps.target_weight() - comps.weight()
    expected = comps.masked_forward(x, inner, mask, delta, weight_delta)
    assert torch.allclose(comps.masked_forward(x, inner, mask, delta, None, layer(x)), expected, atol=1e-5)
    embedding = nn.Embedding(11, 4)
    ecomps = EmbeddingComponents(embedding, 3)
    ids = torch.randint(0, 11, (2, 5))
    inner, mask, delta = ecomps.inner_acts(ids), torch.rand(2, 5, 3), torch.rand(2, 5)
    expected = ecomps.masked_forward(ids, inner, mask, delta, ecomps.target_weight() - ecomps.weight())
    assert torch.allclose(ecomps.masked_forward(ids, inner, mask, delta, None, embedding(ids)), expected, atol=1e-5)


def full_batch_masks(model, lower, use_delta, names, detach=False):
    """Stochastic masks with the fixed draws, every layer from its weights (no cached activations)."""
    return {n: LayerMask(mask=(g.detach() if detach else g) * (1 - NOISE) + NOISE,
                         delta_mask=torch.full(g.shape[:-1], DELTA_NOISE) if use_delta else None)
            for n, g in lower.items() if n in names}


@pytest.fixture
def fixed_draws(monkeypatch):
    monkeypatch.setattr(torch, "rand_like", lambda t, **kw: torch.full_like(t, NOISE))
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.full(tuple(shape), DELTA_NOISE))


@pytest.mark.parametrize("fc1_bias", [False, True])  # with fc1's bias no row is inert: nothing is dropped
@pytest.mark.parametrize("use_delta", [True, False])
@pytest.mark.parametrize("term", ["stochastic", "layerwise", "ci_masked", "pgd"])
def test_shortcut_losses_equal_full_batch_losses(fixed_draws, term, use_delta, fc1_bias):
    torch.manual_seed(0)
    model = ComponentModel(freeze(Mlp(fc1_bias)), call_module, {"fc1": 4, "fc2": 3}, "mlp", [4])
    x = torch.randn(10, 6)
    x[[0, 3, 4, 8]] = 0  # four all-zero rows
    inputs = prepare(model, x)
    assert inputs.recon.frac == (1.0 if fc1_bias else 0.6)
    params = [p for p in model.parameters() if p.requires_grad]
    target_out, lower = inputs.target_out, inputs.importances.lower

    def full(masks):
        return mse_output_loss(model.forward_masked(x, masks, model.weight_deltas()), target_out)

    if term == "stochastic":
        got = stochastic_recon_loss(model, inputs, mse_output_loss, use_delta, 1)
        expected = full(full_batch_masks(model, lower, use_delta, model.names))
    elif term == "layerwise":
        got = stochastic_recon_layerwise_loss(model, inputs, mse_output_loss, use_delta, 1)
        expected = sum(full(full_batch_masks(model, lower, use_delta, [n])) for n in model.names) / 2
    elif term == "ci_masked":
        got = ci_masked_recon_loss(model, inputs, mse_output_loss)
        expected = full({n: LayerMask(mask=g) for n, g in lower.items()})
    else:  # two ascent steps from all-zero sources, a deterministic adversary (at all-ones the loss is ~0 and
        # the signs of its gradient are rounding noise)
        pgd = Pgd(n_steps=2, step_size=0.1, init="zeros", mask_scope="shared")
        got = pgd_recon_loss(model, inputs, mse_output_loss, pgd, use_delta)
        src = {n: torch.zeros(g.shape[-1], requires_grad=True) for n, g in lower.items()}
        dsrc = {n: torch.zeros((), requires_grad=True) for n in lower} if use_delta else {}
        for _ in range(2):
            masks = {n: LayerMask(mask=g.detach() + (1 - g.detach()) * src[n],
                                  delta_mask=dsrc[n].expand(g.shape[:-1]) if use_delta else None)
                     for n, g in lower.items()}
            leaves = [*src.values(), *dsrc.values()]
            grads = torch.autograd.grad(full(masks), leaves)
            stepped = [(s + 0.1 * gr.sign()).clamp(0, 1).detach().requires_grad_(True) for s, gr in zip(leaves, grads)]
            src, dsrc = dict(zip(src, stepped[:len(src)])), dict(zip(dsrc, stepped[len(src):]))
        expected = full({n: LayerMask(mask=g + (1 - g) * src[n].detach(),
                                      delta_mask=dsrc[n].detach().expand(g.shape[:-1]) if use_delta else None)
                         for n, g in lower.items()})
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    got_grads = torch.autograd.grad(got, params, retain_graph=True, allow_unused=True)
    expected_grads = torch.autograd.grad(expected, params, allow_unused=True)
    for g, e in zip(got_grads, expected_grads):
        assert (g is None) == (e is None)
        if g is not None:
            assert torch.allclose(g, e, rtol=1e-4, atol=1e-6)


def test_pgd_subset_routing_runs_unrouted_layers_as_the_target(monkeypatch):
    """`pgd.routing: subset`: per example the chosen layers run under the adversarial masks, the others as the
    target; with a fixed routing the loss and its gradients equal hand-built passes with that routing."""
    torch.manual_seed(0)
    model = ComponentModel(freeze(Mlp(fc1_bias=True)), call_module, {"fc1": 4, "fc2": 3}, "mlp", [4])
    x = torch.randn(6, 6)
    inputs = prepare(model, x)
    lower, target_out = inputs.importances.lower, inputs.target_out
    routing = torch.tensor([[True, False, True, True, False, False], [False, True, True, False, True, False]])
    monkeypatch.setattr("tunelens.spd.losses.subset_routing", lambda shape, n, device: routing)
    pgd = Pgd(n_steps=1, step_size=0.1, init="zeros", mask_scope="shared", routing="subset")
    got = pgd_recon_loss(model, inputs, mse_output_loss, pgd, use_delta=False)

    def full(src, detach):
        masks = {n: LayerMask(mask=(g.detach() if detach else g) + (1 - (g.detach() if detach else g)) * src[n],
                              routing=r) for (n, g), r in zip(lower.items(), routing)}
        return mse_output_loss(model.forward_masked(x, masks, model.weight_deltas()), target_out)

    src = {n: torch.zeros(g.shape[-1], requires_grad=True) for n, g in lower.items()}
    grads = torch.autograd.grad(full(src, True), list(src.values()))
    src = {n: (s + 0.1 * gr.sign()).clamp(0, 1).detach() for (n, s), gr in zip(src.items(), grads)}
    expected = full(src, False)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    params = [p for p in model.parameters() if p.requires_grad]
    for g, e in zip(torch.autograd.grad(got, params, retain_graph=True), torch.autograd.grad(expected, params)):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-6)
    # every layer routed to the target on every example: the output is the target's, nothing to reconstruct
    monkeypatch.setattr("tunelens.spd.losses.subset_routing", lambda shape, n, device: torch.zeros_like(routing))
    assert pgd_recon_loss(model, inputs, mse_output_loss, pgd, use_delta=False).item() == pytest.approx(0, abs=1e-10)
    # "all" ignores the subset draw
    all_layers = pgd_recon_loss(model, inputs, mse_output_loss, pgd.model_copy(update={"routing": "all"}), False)
    assert all_layers.item() > 1e-6
