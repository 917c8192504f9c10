"""Rank-one subcomponents of one weight matrix.

A decomposed matrix W (d_out × d_in) is approximated by Σ_c U[c]ᵀ V[:, c]ᵀ: C rank-one pieces, C may exceed
the rank. A forward pass with mask m (one value per subcomponent, per example) computes
    y = ((x V) ⊙ m) U + b + δ · x (W − (V U)ᵀ)ᵀ
where b is the target's (never decomposed) bias and the last term is the optional delta component with its
own scalar mask δ. With m = 1 and δ = 1 this is exactly the target layer, whatever V and U are.
Where x is the input the target layer saw and its output y_t = x Wᵀ + b is known, the delta term is
δ · (y_t − b − (x V) U), so
    y = ((x V) ⊙ (m − δ)) U + δ · y_t + (1 − δ) · b
the same function of V and U, without the product of x with the full d_out × d_in weight delta.
"""

from __future__ import annotations

import math

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn


def delta_from_target_output(inner: Float[Tensor, "... C"], mask: Float[Tensor, "... C"], U: Float[Tensor, "C d_out"],
                             delta_mask: Float[Tensor, "..."], target_out: Float[Tensor, "... d_out"]
                             ) -> Float[Tensor, "... d_out"]:
    """((x V) ⊙ (m − δ)) U + δ · y_t: the masked output with the delta term taken from the target's output y_t
    (module docstring), without the target's bias."""
    d = delta_mask.unsqueeze(-1)
    return (inner * (mask - d)) @ U + d * target_out


class LinearComponents(nn.Module):
    """Subcomponents of an `nn.Linear`; the target layer is referenced, not copied."""

    def __init__(self, target: nn.Linear, C: int):
        super().__init__()
        self.C = C
        d_out, d_in = target.weight.shape
        self.V = nn.Parameter(torch.randn(d_in, C, device=target.weight.device) / math.sqrt(d_in))
        self.U = nn.Parameter(torch.randn(C, d_out, device=target.weight.device) / math.sqrt(C))
        self._target = [target]  # a list keeps the frozen layer out of this module's parameters

    def target_weight(self) -> Float[Tensor, "d_out d_in"]:
        return self._target[0].weight

    def weight(self) -> Float[Tensor, "d_out d_in"]:
        return (self.V @ self.U).T

    def inner_acts(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... C"]:
        return x @ self.V

    def masked_forward(self, x: Float[Tensor, "... d_in"], inner: Float[Tensor, "... C"],
                       mask: Float[Tensor, "... C"], delta_mask: Float[Tensor, "..."] | None,
                       weight_delta: Float[Tensor, "d_out d_in"] | None,
                       target_out: Float[Tensor, "... d_out"] | None = None) -> Float[Tensor, "... d_out"]:
        """`target_out`, the target layer's output on this very x, replaces `weight_delta` (module docstring)."""
        bias = self._target[0].bias
        if delta_mask is not None and target_out is not None:
            out = delta_from_target_output(inner, mask, self.U, delta_mask, target_out)
            return out if bias is None else out + (1 - delta_mask.unsqueeze(-1)) * bias
        out = (inner * mask) @ self.U
        if bias is not None:
            out = out + bias
        if delta_mask is not None:
            assert weight_delta is not None
            out = out + delta_mask.unsqueeze(-1) * F.linear(x, weight_delta)
        return out

    def subcomponent_matrices(self) -> Float[Tensor, "C d_out d_in"]:
        return einops.einsum(self.U, self.V, "C d_out, d_in C -> C d_out d_in")


class TiedLinearComponents(LinearComponents):
    """Subcomponents of an `nn.Linear` whose target weight is the transpose of another decomposed layer's
    (TMS: linear2 = linear1ᵀ). They are that layer's subcomponents transposed, V = Uₛᵀ and U = Vₛᵀ, so both
    layers share one set of parameters (held by the source) and one decomposition; each keeps its own
    causal-importance function and masks."""

    def __init__(self, target: nn.Linear, source: LinearComponents):
        nn.Module.__init__(self)  # no parameters of its own
        if tuple(target.weight.shape) != tuple(source.target_weight().shape[::-1]):
            raise ValueError(f"cannot tie a {tuple(target.weight.shape)} weight to a "
                             f"{tuple(source.target_weight().shape)} one: the shapes must be transposed")
        self.C = source.C
        self._target = [target]
        self._source = [source]  # a list keeps the source's parameters registered once, under the source

    @property  # type: ignore[override]
    def V(self) -> Float[Tensor, "d_in C"]:
        return self._source[0].U.T

    @property  # type: ignore[override]
    def U(self) -> Float[Tensor, "C d_out"]:
        return self._source[0].V.T

    def weight(self) -> Float[Tensor, "d_out d_in"]:
        """The source's weight, transposed: (V U)ᵀ here is (Vₛ Uₛ)ᵀᵀ, and taking the source's product itself makes
        the two exactly transposes (a product of the transposed factors can round differently)."""
        return self._source[0].weight().T


class EmbeddingComponents(nn.Module):
    """Subcomponents of an `nn.Embedding` (weight vocab × d_model, used as W = weightᵀ acting on one-hots):
    the inner activation of token t is just row t of V, so no one-hot is ever built."""

    def __init__(self, target: nn.Embedding, C: int):
        super().__init__()
        self.C = C
        vocab, d_model = target.weight.shape
        self.V = nn.Parameter(torch.randn(vocab, C, device=target.weight.device))
        self.U = nn.Parameter(torch.randn(C, d_model, device=target.weight.device) / math.sqrt(C))
        self._target = [target]

    def target_weight(self) -> Float[Tensor, "vocab d_model"]:
        return self._target[0].weight

    def weight(self) -> Float[Tensor, "vocab d_model"]:
        return self.V @ self.U

    def inner_acts(self, token_ids: Int[Tensor, "..."]) -> Float[Tensor, "... C"]:
        return self.V[token_ids]

    def masked_forward(self, token_ids: Int[Tensor, "..."], inner: Float[Tensor, "... C"],
                       mask: Float[Tensor, "... C"], delta_mask: Float[Tensor, "..."] | None,
                       weight_delta: Float[Tensor, "vocab d_model"] | None,
                       target_out: Float[Tensor, "... d_model"] | None = None) -> Float[Tensor, "... d_model"]:
        """`target_out`, the target's embedding of these tokens, replaces `weight_delta` as for `LinearComponents`."""
        if delta_mask is not None and target_out is not None:
            return delta_from_target_output(inner, mask, self.U, delta_mask, target_out)
        out = (inner * mask) @ self.U
        if delta_mask is not None:
            assert weight_delta is not None
            out = out + delta_mask.unsqueeze(-1) * weight_delta[token_ids]
        return out

    def subcomponent_matrices(self) -> Float[Tensor, "C vocab d_model"]:
        return einops.einsum(self.V, self.U, "vocab C, C d_model -> C vocab d_model")


def make_components(module: nn.Module, C: int) -> LinearComponents | EmbeddingComponents:
    if isinstance(module, nn.Linear):
        return LinearComponents(module, C)
    if isinstance(module, nn.Embedding):
        return EmbeddingComponents(module, C)
    raise TypeError(f"cannot decompose {type(module).__name__}: only nn.Linear and nn.Embedding are supported")
