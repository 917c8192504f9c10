import pytest
import torch

from tunelens.spd import metrics


def test_alive_and_l0_hand_computed():
    g = torch.tensor([[0.9, 0.0, 0.15], [0.2, 0.0, 0.0], [0.0, 0.05, 0.3]])
    assert metrics.n_alive(g, 0.1) == 2  # columns 0 and 2 exceed 0.1 somewhere
    assert metrics.ci_l0(g, 0.1) == pytest.approx(4 / 3)  # 2 + 1 + 1 above 0.1 over 3 rows


def test_subcomponent_norms_and_n_large_hand_computed():
    V = torch.tensor([[3.0, 0.0, 0.01], [4.0, 2.0, 0.0]])  # columns: norms 5, 2, 0.01
    U = torch.tensor([[1.0, 0.0], [0.0, 0.5], [0.3, 0.4]])  # rows: norms 1, 0.5, 0.5
    norms = metrics.subcomponent_norms(V, U)
    assert norms.tolist() == pytest.approx([5.0, 1.0, 0.005])
    pieces = torch.einsum("ic,co->coi", V, U)  # the rank-one matrices themselves
    assert norms.tolist() == pytest.approx(pieces.flatten(1).norm(dim=1).tolist())
    assert metrics.n_large(norms, 0.1) == 2  # 1.0 ≥ 0.5 = 0.1 × 5; 0.005 is not
    assert metrics.n_large(norms, 0.3) == 1


def test_mmcs_ml2r_hand_computed():
    target = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    comps = torch.zeros(2, 3, 2)
    comps[0, 1] = torch.tensor([2.0, 0.0])  # piece 0 matched exactly in direction, norm ratio 2
    comps[0, 2] = torch.tensor([1.0, 1.0])  # cos 0.707, not the best
    comps[1, 0] = torch.tensor([1.0, 1.0])  # piece 1 best cos = 1/sqrt(2), norm ratio sqrt(2)/2
    mmcs, ml2r = metrics.mmcs_ml2r(target, comps)
    assert mmcs == pytest.approx((1 + 2**-0.5) / 2, abs=1e-6)
    assert ml2r == pytest.approx((2 + 2**0.5 / 2) / 2, abs=1e-6)


def test_mmcs_ml2r_ignores_negligible_slices_that_point_the_right_way():
    target = torch.tensor([[3.0, 4.0]])  # norm 5
    comps = torch.zeros(1, 3, 2)
    comps[0, 0] = torch.tensor([3e-4, 4e-4])  # exact direction, norm ratio 1e-4: a dead subcomponent
    comps[0, 1] = torch.tensor([4.0, 4.0])  # the real one: cos 7/(5*sqrt(2)), norm ratio 4*sqrt(2)/5
    comps[0, 2] = torch.tensor([0.4, 0.0])  # norm ratio 0.08 < 0.1: not a candidate either
    mmcs, ml2r = metrics.mmcs_ml2r(target, comps)
    assert mmcs == pytest.approx(7 / (5 * 2**0.5), abs=1e-6)
    assert ml2r == pytest.approx(4 * 2**0.5 / 5, abs=1e-6)
    assert metrics.mmcs_ml2r(target, comps, min_norm_ratio=0.0) == pytest.approx((1.0, 1e-4), abs=1e-6)
    only_dead = comps.clone()
    only_dead[0, 1:] = 0.0  # nothing large: the best direction among all is reported, shrinkage and all
    assert metrics.mmcs_ml2r(target, only_dead) == pytest.approx((1.0, 1e-4), abs=1e-6)


def test_identity_pattern_error_is_zero_for_permuted_identity_and_counts_deviations():
    perfect = torch.zeros(3, 5)
    perfect[0, 4], perfect[1, 0], perfect[2, 2] = 1.0, 0.95, 1.0
    assert metrics.identity_pattern_error(perfect) == 0
    broken = perfect.clone()
    broken[0, 1] = 0.5  # one stray entry
    broken[2, 2] = 0.5  # one weak diagonal (its best column still is 2)
    assert metrics.identity_pattern_error(broken) == 2


def test_dense_pattern_error():
    perfect = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.95, 0.0]])
    assert metrics.dense_pattern_error(perfect, k=2) == 0
    assert metrics.dense_pattern_error(perfect, k=3) == 1  # third column never reaches 0.9
    assert metrics.dense_pattern_error(perfect, k=1) == 2  # column 2 is on (>0.1) on both inputs
