"""How separate the good and bad branches ended up, per adapted module.

For a LoRA pair the update of each branch is dW = B A (d_out x d_in); for an MLP-adapter pair the branch writes
into the span of its up-projection's columns (d_model x width). Per module we report the principal angles
between the two column spaces (cos theta_i = singular values of Q_good^T Q_bad, Q an orthonormal basis of the
span) and the cosine of the two flattened updates.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tunelens.routing.adapters import DualAdapterLayer, LoraBranch


def column_basis(matrix: Float[Tensor, "d_out k"], rtol: float = 1e-6) -> Float[Tensor, "d_out rank"]:
    """An orthonormal basis of the column space (directions with singular value below rtol x the largest are
    dropped, so a zero branch has an empty basis)."""
    u, s, _ = torch.linalg.svd(matrix.double(), full_matrices=False)
    if len(s) == 0 or s[0] == 0:
        return u[:, :0]
    return u[:, s > rtol * s[0]]


def principal_angles(a: Float[Tensor, "d k1"], b: Float[Tensor, "d k2"]) -> Float[Tensor, "n"]:
    """Principal angles in degrees between the column spaces of a and b, smallest first."""
    qa, qb = column_basis(a), column_basis(b)
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        return torch.zeros(0, dtype=torch.float64)
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(cosines))


def flat_cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    denominator = a.norm() * b.norm()
    return float(a @ b / denominator) if denominator > 0 else 0.0


def branch_update(branch: nn.Module) -> Float[Tensor, "d_out k"]:
    if isinstance(branch, LoraBranch):
        return branch.delta_weight().detach()
    return branch.up.weight.detach()


def orthogonality_table(model: nn.Module) -> list[dict[str, object]]:
    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, DualAdapterLayer) or not {"good", "bad"} <= set(module.branches):
            continue
        good, bad = branch_update(module.branches["good"]), branch_update(module.branches["bad"])
        angles = principal_angles(good, bad)
        rows.append({"module": name, "min_angle_deg": float(angles.min()) if len(angles) else None,
                     "mean_angle_deg": float(angles.mean()) if len(angles) else None,
                     "angles_deg": [round(float(a), 3) for a in angles],
                     "update_cosine": flat_cosine(good, bad)})
    return rows
