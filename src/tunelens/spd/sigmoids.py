"""Hard sigmoids that turn raw causal-importance outputs into importances in (about) [0, 1].

- `lower_leaky_hard`: α·x below 0, x on [0, 1], 1 above. Used for masks and every importance metric; the
  small negative slope keeps a gradient flowing to importances stuck below 0.
- `upper_leaky_hard`: 0 below 0, x on [0, 1], 1 + α·(x − 1) above. Used for the importance-minimality
  penalty, which therefore never rewards negative values and keeps pushing on values above 1.
- `hard`: a plain clamp to [0, 1], used for both roles.
- `leaky_hard_clamped` (the reference implementation's lower sigmoid since its PR #234, made for long LM runs that
  diverged): the forward pass is a plain clamp to [0, 1], so importances and masks never go negative; below 0 the
  backward pass lets α × the incoming gradient through only where that gradient is negative (where a descent step
  would raise the importance), and nothing above 1. Paired with `upper_leaky_hard` for the penalty.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

LEAK = 0.01
SigmoidType = Literal["leaky_hard", "hard", "leaky_hard_clamped"]


def lower_leaky_hard(x: Tensor, alpha: float = LEAK) -> Tensor:
    return torch.where(x < 0, alpha * x, x.clamp(max=1.0))


def upper_leaky_hard(x: Tensor, alpha: float = LEAK) -> Tensor:
    return torch.where(x > 1, 1 + alpha * (x - 1), x.clamp(min=0.0))


class _ClampedLowerLeaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:  # noqa: ANN001 - autograd's signature
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (x,) = ctx.saved_tensors
        inside = (x > 0) & (x < 1)
        below_and_raising = (x <= 0) & (grad < 0)
        return torch.where(inside, grad, torch.where(below_and_raising, ctx.alpha * grad, torch.zeros_like(grad))), None


def clamped_lower_leaky_hard(x: Tensor, alpha: float = LEAK) -> Tensor:
    """Clamp to [0, 1] forward; backward as described in the module docstring."""
    return _ClampedLowerLeaky.apply(x, alpha)


def hard(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0)


def importance_pair(raw: Tensor, kind: SigmoidType) -> tuple[Tensor, Tensor]:
    """(importance for masks and metrics, importance for the minimality penalty)."""
    if kind == "hard":
        clamped = hard(raw)
        return clamped, clamped
    if kind == "leaky_hard_clamped":
        return clamped_lower_leaky_hard(raw), upper_leaky_hard(raw)
    if kind != "leaky_hard":
        raise ValueError(f"unknown sigmoid type {kind!r}")
    return lower_leaky_hard(raw), upper_leaky_hard(raw)
