import pytest
import torch

from tunelens.spd.losses import (
    annealed_p,
    faithfulness_loss,
    importance_minimality_loss,
    kl_output_loss,
    mse_output_loss,
    stochastic_mask,
    total_loss,
)
from tunelens.spd.sigmoids import hard, importance_pair, lower_leaky_hard, upper_leaky_hard


def test_faithfulness_hand_computed():
    deltas = {"a": torch.tensor([[1.0, 2.0], [0.0, 1.0]]), "b": torch.tensor([[3.0, 0.0, 0.0]])}
    # squares: 1 + 4 + 0 + 1 + 9 = 15 over 4 + 3 = 7 entries
    assert torch.isclose(faithfulness_loss(deltas), torch.tensor(15 / 7))


def test_importance_minimality_hand_computed():
    g = {"a": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([[0.5], [0.0]])}
    # p=1: layer a: mean over rows of row sums = (3 + 7) / 2 = 5; layer b: (0.5 + 0) / 2 = 0.25
    assert torch.isclose(importance_minimality_loss(g, p=1.0, eps=0.0), torch.tensor(5.25))
    # p=2: a: (1 + 4 + 9 + 16) / 2 = 15; b: 0.25 / 2 = 0.125
    assert torch.isclose(importance_minimality_loss(g, p=2.0, eps=0.0), torch.tensor(15.125))


def test_importance_minimality_eps_keeps_small_p_finite_gradient():
    g = {"a": torch.zeros(2, 3, requires_grad=True)}
    importance_minimality_loss(g, p=0.5, eps=1e-12).backward()
    assert torch.isfinite(g["a"].grad).all()


def test_total_loss_weights_each_term_by_coefficient_and_scale():
    from tunelens.spd.configs import LossCoeffs

    terms = {"stochastic_recon": torch.tensor(2.0), "importance_minimality": torch.tensor(10.0)}
    coeffs = LossCoeffs(stochastic_recon=1.5, importance_minimality=0.1)
    assert total_loss(terms, coeffs).item() == pytest.approx(1.5 * 2 + 0.1 * 10)
    assert total_loss(terms, coeffs, {"importance_minimality": 0.25}).item() == pytest.approx(3 + 0.25 * 1.0)


def test_annealed_p_before_during_after():
    assert annealed_p(0.1, 2.0, 0.5, 0.2, 0.6) == 2.0
    assert annealed_p(0.4, 2.0, 0.5, 0.2, 0.6) == pytest.approx(1.25)  # halfway: 2 + (0.5 - 2) / 2
    assert annealed_p(0.9, 2.0, 0.5, 0.2, 0.6) == 0.5
    assert annealed_p(0.9, 2.0, None, 0.2, 0.6) == 2.0


def test_mse_and_kl_hand_computed():
    pred, target = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert torch.isclose(mse_output_loss(pred, target), torch.tensor(2.5))  # (1 + 4) / 2
    # target probs (1/2, 1/2) from equal logits; pred logits (0, log 3) -> probs (1/4, 3/4)
    kl = kl_output_loss(torch.tensor([[0.0, torch.log(torch.tensor(3.0))]]), torch.zeros(1, 2))
    expected = 0.5 * torch.log(torch.tensor(0.5 / 0.25)) + 0.5 * torch.log(torch.tensor(0.5 / 0.75))
    assert torch.isclose(kl, expected)
    assert kl_output_loss(torch.randn(3, 5), torch.zeros(3, 5)) > 0
    same = torch.randn(4, 7)
    assert torch.isclose(kl_output_loss(same, same), torch.tensor(0.0), atol=1e-7)


def test_stochastic_mask_interpolates_between_importance_and_one():
    g = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(stochastic_mask(g, torch.zeros(3)), g)
    assert torch.allclose(stochastic_mask(g, torch.ones(3)), torch.ones(3))
    assert torch.allclose(stochastic_mask(g, torch.full((3,), 0.5)), torch.tensor([0.5, 0.75, 1.0]))


def test_hard_sigmoids():
    x = torch.tensor([-1.0, 0.5, 2.0])
    assert torch.allclose(lower_leaky_hard(x), torch.tensor([-0.01, 0.5, 1.0]))
    assert torch.allclose(upper_leaky_hard(x), torch.tensor([0.0, 0.5, 1.01]))
    assert torch.allclose(hard(x), torch.tensor([0.0, 0.5, 1.0]))
    lower, upper = importance_pair(x, "hard")
    assert torch.equal(lower, upper)


def test_lower_leaky_keeps_gradient_below_zero():
    x = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    lower_leaky_hard(x).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.01, 1.0, 0.0]))


def test_clamped_lower_leaky_forward_and_one_sided_leak():
    from tunelens.spd.sigmoids import clamped_lower_leaky_hard

    x = torch.tensor([-1.0, -0.5, 0.5, 2.0], requires_grad=True)
    y = clamped_lower_leaky_hard(x)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.0, 0.5, 1.0]))  # never negative
    # incoming gradients: a descent step raises x where the gradient is negative
    y.backward(torch.tensor([-2.0, 3.0, 4.0, -5.0]))
    assert torch.allclose(x.grad, torch.tensor([-0.02, 0.0, 4.0, 0.0]))
    lower, upper = importance_pair(torch.tensor([-1.0, 2.0]), "leaky_hard_clamped")
    assert lower.tolist() == [0.0, 1.0] and torch.allclose(upper, torch.tensor([0.0, 1.01]))
