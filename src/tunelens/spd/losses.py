"""SPD's loss terms as pure functions of tensors.

Notation: l indexes decomposed layers, c subcomponents, g the importance (lower-leaky for masks, upper-leaky
for the penalty), r ~ U(0, 1).
- faithfulness      Σ_l ‖W_l − Σ_c U_lc V_lcᵀ‖²_F / Σ_l (number of entries of W_l)
- stochastic masks  m = g + (1 − g) · r      (fresh r for every loss term and every mask sample)
- output losses     MSE: mean squared error over all output entries;
                    KL: Σ_vocab p_target (log p_target − log p_pred), averaged over positions
- minimality        Σ_l Σ_c mean_batch (g_upper + ε)^p, with p annealed linearly between two values
The reconstruction losses (stochastic, layerwise, subset, importance-masked, adversarial) are compositions of
these with masked forward passes and live in `train.py`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def faithfulness_loss(weight_deltas: Mapping[str, Float[Tensor, "d_out d_in"]]) -> Float[Tensor, ""]:
    squared = sum(delta.pow(2).sum() for delta in weight_deltas.values())
    n_entries = sum(delta.numel() for delta in weight_deltas.values())
    return squared / n_entries


def stochastic_mask(importance: Float[Tensor, "... C"], noise: Float[Tensor, "... C"] | None = None
                    ) -> Float[Tensor, "... C"]:
    """m = g + (1 − g)·r: fully on where g = 1, uniform on [0, 1] where g = 0; differentiable in g."""
    if noise is None:
        noise = torch.rand_like(importance)
    return importance + (1 - importance) * noise


def mse_output_loss(pred: Float[Tensor, "... d"], target: Float[Tensor, "... d"]) -> Float[Tensor, ""]:
    return (pred - target).pow(2).mean()


def kl_output_loss(pred_logits: Float[Tensor, "... vocab"], target_logits: Float[Tensor, "... vocab"]
                   ) -> Float[Tensor, ""]:
    """KL(target ‖ pred) per position, averaged over positions."""
    target_logp = F.log_softmax(target_logits, dim=-1)
    pred_logp = F.log_softmax(pred_logits, dim=-1)
    return (target_logp.exp() * (target_logp - pred_logp)).sum(-1).mean()


def importance_minimality_loss(importances_upper: Mapping[str, Float[Tensor, "... C"]], p: float,
                               eps: float = 1e-12) -> Float[Tensor, ""]:
    """Summed over layers and subcomponents, averaged over examples (and positions); not normalised by the
    number of layers, so adding a layer adds its own sparsity pressure."""
    total = 0.0
    for g in importances_upper.values():
        total = total + (g + eps).pow(p).sum(-1).mean()
    return total  # type: ignore[return-value]


def annealed_p(progress: float, p_start: float, p_end: float | None, start_frac: float, end_frac: float) -> float:
    """p held at p_start until start_frac of training, linear to p_end at end_frac, then held."""
    if p_end is None or progress <= start_frac:
        return p_start
    if progress >= end_frac:
        return p_end
    return p_start + (p_end - p_start) * (progress - start_frac) / (end_frac - start_frac)
