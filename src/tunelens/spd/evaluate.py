"""Evaluation of a decomposition on one batch: liveness, L0 and weight norms per layer, every loss term, and
where the answer is known (toy targets) the importance patterns on one-hot inputs and the match to the true
rank-one pieces; next-token losses for language models."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tunelens.lm.scoring import next_token_ce
from tunelens.spd import metrics
from tunelens.spd.component_model import ComponentModel, LayerMask
from tunelens.spd.configs import SpdConfig
from tunelens.spd.losses import OutputLoss, faithfulness_loss, kl_output_loss, loss_terms, prepare, total_loss
from tunelens.spd.targets import CiPattern, Target, ToyTarget
from tunelens.spd.targets.lm import LmTarget


def flat_importances(importances: dict[str, Tensor]) -> dict[str, Tensor]:
    return {n: g.reshape(-1, g.shape[-1]) for n, g in importances.items()}


@torch.no_grad()
def one_hot_importances(model: ComponentModel, target: ToyTarget) -> dict[str, Tensor]:
    _, layer_inputs = model.forward_target(target.one_hot_inputs)
    return flat_importances(model.importances(layer_inputs).lower)


def pattern_errors(one_hot: dict[str, Tensor], patterns: list[CiPattern], tol: float) -> dict[str, int]:
    """Pattern error of each group of layers, their subcomponent columns side by side (a feature may be
    computed in any of the group's layers)."""
    errors = {}
    for pattern in patterns:
        joined = torch.cat([one_hot[name] for name in pattern.layers], dim=-1)
        key = "+".join(pattern.layers)
        if pattern.kind == "identity":
            errors[key] = metrics.identity_pattern_error(joined, tol)
        else:
            errors[key] = metrics.dense_pattern_error(joined, pattern.k, tol)
    return errors


def ground_truth_match(model: ComponentModel, target: ToyTarget) -> dict[str, tuple[float, float]]:
    """MMCS and ML2R of each layer whose target has known rank-one pieces (its columns or rows)."""
    matches = {}
    for name, axis in target.ground_truth_axes.items():
        comps = model.component(name)
        W = comps.target_weight().detach()
        V, U = comps.V.detach(), comps.U.detach()
        if axis == "in":  # piece f is column f of W; subcomponent c's column f is V[f, c]·U[c]
            target_slices, comp_slices = W.T, V.unsqueeze(-1) * U.unsqueeze(0)
        else:  # piece f is row f of W; subcomponent c's row f is U[c, f]·V[:, c]
            target_slices, comp_slices = W, U.T.unsqueeze(-1) * V.T.unsqueeze(0)
        matches[name] = metrics.mmcs_ml2r(target_slices, comp_slices)
    return matches


@torch.no_grad()
def evaluate(model: ComponentModel, target: Target, config: SpdConfig, output_loss: OutputLoss,
             progress: float) -> dict[str, Any]:
    """Per-layer liveness, L0, large-norm count, ground-truth match; pattern errors on one-hot inputs; every
    loss term."""
    x = target.eval_batch(config.eval.batch_size)
    inputs = prepare(model, x)
    threshold = config.eval.ci_alive_threshold
    flat = flat_importances(inputs.importances.lower)
    layers: dict[str, dict[str, float]] = {
        name: {"n_alive": metrics.n_alive(g, threshold), "ci_l0": metrics.ci_l0(g, threshold)}
        for name, g in flat.items()
    }
    for name in flat:
        comps = model.component(name)
        norms = metrics.subcomponent_norms(comps.V, comps.U)  # evaluate runs without gradients
        layers[name]["n_large"] = metrics.n_large(norms, config.eval.large_norm_frac)
    result: dict[str, Any] = {"layers": layers}
    if isinstance(target, ToyTarget):
        for name, (mmcs, ml2r) in ground_truth_match(model, target).items():
            layers[name].update(mmcs=mmcs, ml2r=ml2r)
        if target.ci_patterns:
            errors = pattern_errors(one_hot_importances(model, target), target.ci_patterns,
                                    config.eval.pattern_tolerance)
            result["identity_ci_error"] = sum(errors.values())
            result["ci_pattern_errors"] = errors
    terms = loss_terms(model, inputs, config, output_loss, progress)
    result.update({f"loss_{name}": float(value) for name, value in terms.items()})
    result["loss_total"] = float(total_loss(terms, config.loss))
    result["faithfulness"] = float(faithfulness_loss(inputs.weight_deltas))
    all_on = {n: LayerMask(mask=torch.ones_like(g)) for n, g in inputs.importances.lower.items()}
    unmasked_out = model.forward_masked(x, all_on, inputs.weight_deltas)
    result["unmasked_recon"] = float(output_loss(unmasked_out, inputs.target_out))
    if isinstance(target, LmTarget):  # token ids in, logits out: report next-token losses too
        ci_masked_out = model.forward_masked(x, {n: LayerMask(mask=g) for n, g in inputs.importances.lower.items()})
        result["kl"] = float(kl_output_loss(ci_masked_out, inputs.target_out))
        result["ce_target"] = float(next_token_ce(inputs.target_out, x))
        result["ce_masked"] = float(next_token_ce(ci_masked_out, x))
        result["ce_unmasked"] = float(next_token_ce(unmasked_out, x))
    return result
