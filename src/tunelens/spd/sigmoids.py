"""Hard sigmoids that turn raw causal-importance outputs into importances in (about) [0, 1].

- `lower_leaky_hard`: α·x below 0, x on [0, 1], 1 above. Used for masks and every importance metric; the
  small negative slope keeps a gradient flowing to importances stuck below 0.
- `upper_leaky_hard`: 0 below 0, x on [0, 1], 1 + α·(x − 1) above. Used for the importance-minimality
  penalty, which therefore never rewards negative values and keeps pushing on values above 1.
- `hard`: a plain clamp to [0, 1], used for both roles.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

LEAK = 0.01
SigmoidType = Literal["leaky_hard", "hard"]


def lower_leaky_hard(x: Tensor, alpha: float = LEAK) -> Tensor:
    return torch.where(x < 0, alpha * x, x.clamp(max=1.0))


def upper_leaky_hard(x: Tensor, alpha: float = LEAK) -> Tensor:
    return torch.where(x > 1, 1 + alpha * (x - 1), x.clamp(min=0.0))


def hard(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0)


def importance_pair(raw: Tensor, kind: SigmoidType) -> tuple[Tensor, Tensor]:
    """(importance for masks and metrics, importance for the minimality penalty)."""
    if kind == "hard":
        clamped = hard(raw)
        return clamped, clamped
    return lower_leaky_hard(raw), upper_leaky_hard(raw)
