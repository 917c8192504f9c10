"""Evaluation metrics of a decomposition, as pure functions of importances and weights.

- n_alive: subcomponents whose importance exceeds a threshold on at least one input.
- ci_l0: mean number of subcomponents above the threshold per input.
- n_large: subcomponents whose weight (the Frobenius norm of the rank-one piece, |V_c|·|U_c|) is at least a
  fraction of the layer's largest: the paper's "non-negligible norm" count, blind to rare importance firings.
- mmcs / ml2r: for each ground-truth rank-one piece k of the target (given by its slice along the feature
  axis, e.g. column f of W), the subcomponent whose slice k has the highest cosine similarity with it; MMCS
  is the mean of those best cosines, ML2R the mean norm ratio of the matched slice to the target slice.
  Only slices of at least `min_norm_ratio` (10 %) of the target slice's norm can be matched (all of them
  when none is that large): in a 2-d hidden space a dead subcomponent of norm ~0 can point along a column
  to within 1e-6 by chance, and matching it would report a shrinkage that is not there.
- identity / dense pattern errors on one-hot inputs: after the best permutation of subcomponents, how far
  the importance pattern is from the expected identity (feature f uses only subcomponent f) or dense
  (k subcomponents always on together) pattern, counted in entries beyond a tolerance; 0 is perfect.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def n_alive(importance: Float[Tensor, "batch C"], threshold: float) -> int:
    return int((importance > threshold).any(dim=0).sum())


def ci_l0(importance: Float[Tensor, "batch C"], threshold: float) -> float:
    return float((importance > threshold).float().sum(-1).mean())


def subcomponent_norms(V: Float[Tensor, "d_in C"], U: Float[Tensor, "C d_out"]) -> Float[Tensor, " C"]:
    """Frobenius norm of each rank-one piece V[:, c] U[c]: for an outer product it is |V[:, c]|·|U[c]|."""
    return V.norm(dim=0) * U.norm(dim=1)


def n_large(norms: Float[Tensor, " C"], frac: float) -> int:
    return int((norms >= frac * norms.max()).sum())


def mmcs_ml2r(target_slices: Float[Tensor, "K d"], component_slices: Float[Tensor, "K C d"],
              min_norm_ratio: float = 0.1) -> tuple[float, float]:
    assert component_slices.shape[0] == target_slices.shape[0], (component_slices.shape, target_slices.shape)
    assert component_slices.shape[-1] == target_slices.shape[-1], (component_slices.shape, target_slices.shape)
    cosines = torch.nn.functional.cosine_similarity(component_slices, target_slices.unsqueeze(1), dim=-1, eps=1e-12)
    ratios = component_slices.norm(dim=-1) / target_slices.norm(dim=-1, keepdim=True)
    candidate = ratios >= min_norm_ratio
    candidate |= ~candidate.any(dim=1, keepdim=True)  # no large slice at all: match among every subcomponent
    best = cosines.masked_fill(~candidate, -2.0).argmax(dim=1)
    rows = torch.arange(len(best))
    return float(cosines[rows, best].mean()), float(ratios[rows, best].mean())


def identity_permutation(importance: Float[Tensor, "n C"]) -> np.ndarray:
    """Column order that puts the best subcomponent for each input on the diagonal (Hungarian), the rest after
    it sorted by total importance."""
    values = importance.detach().cpu().numpy()
    n, C = values.shape
    rows, cols = linear_sum_assignment(-values)
    diagonal = cols[np.argsort(rows)]
    rest = [c for c in np.argsort(-values.sum(0)) if c not in set(diagonal.tolist())]
    assert n <= C, f"identity pattern needs at least as many subcomponents ({C}) as inputs ({n})"
    return np.concatenate([diagonal, np.array(rest, dtype=int)])


def dense_permutation(importance: Float[Tensor, "n C"]) -> np.ndarray:
    return np.argsort(-importance.detach().cpu().numpy().sum(0), kind="stable")


def identity_pattern_error(importance: Float[Tensor, "n C"], tol: float = 0.1) -> int:
    """Off-diagonal entries above tol plus diagonal entries below 1 − tol, after the best permutation."""
    n = importance.shape[0]
    permuted = importance[:, torch.as_tensor(identity_permutation(importance))]
    diagonal = permuted[:, :n].diagonal()
    off = permuted.clone()
    off[torch.arange(n), torch.arange(n)] = 0.0
    return int((diagonal < 1 - tol).sum() + (off > tol).sum())


def dense_pattern_error(importance: Float[Tensor, "n C"], k: int, tol: float = 0.1) -> int:
    """Among columns sorted by total importance: each of the first k lacking an entry ≥ 1 − tol, plus every
    entry above tol in the remaining columns."""
    permuted = importance[:, torch.as_tensor(dense_permutation(importance))]
    missing = (permuted[:, :k].max(dim=0).values < 1 - tol).sum()
    stray = (permuted[:, k:] > tol).sum()
    return int(missing + stray)
