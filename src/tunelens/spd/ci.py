"""Causal-importance functions: one raw importance per subcomponent, from cheap per-layer inputs.

- `mlp`: C independent tiny MLPs, each reading only its own subcomponent's scalar inner activation v_c·x.
- `vector_mlp`: C independent MLPs, each reading the whole layer input x.
- `shared_mlp`: one MLP from x to C outputs.
All are evaluated as batched tensor products over the C axis, never as a Python loop over components.
"""

from __future__ import annotations

import math
from typing import Literal

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

CiFnType = Literal["mlp", "vector_mlp", "shared_mlp"]


class ParallelLinear(nn.Module):
    """C independent linear maps applied at once: (..., C, d_in) -> (..., C, d_out). Holds the parameters of
    every CI type's per-subcomponent layers; `vector_mlp` calls it, `mlp` uses its weights in its own layout."""

    def __init__(self, C: int, d_in: int, d_out: int, gain: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(C, d_in, d_out) * gain / math.sqrt(d_in))
        self.bias = nn.Parameter(torch.zeros(C, d_out))

    def forward(self, x: Float[Tensor, "... C d_in"]) -> Float[Tensor, "... C d_out"]:
        # A 1-wide output is a broadcast product, not a matmul: a batched matmul in this (..., C, d) layout returns
        # a permuted (non-contiguous) result that makes the preceding GELU's backward several times slower on CPU.
        if self.weight.shape[2] == 1:
            return (x * self.weight[:, :, 0]).sum(-1, keepdim=True) + self.bias
        out = einops.einsum(x, self.weight, "... C d_in, C d_in d_out -> ... C d_out")
        return out.contiguous() + self.bias


class ScalarMlpCi(nn.Module):
    """`mlp`: per subcomponent, 1 -> hidden -> ... -> 1 on the scalar inner activation."""

    uses_inner_acts = True

    def __init__(self, C: int, d_in: int, hidden: list[int]):
        super().__init__()
        dims = [1, *hidden, 1]
        self.layers = nn.ModuleList(
            ParallelLinear(C, a, b, gain=math.sqrt(2) if i < len(dims) - 2 else 1.0)
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))
        )

    # Up to this many subcomponents the example-major layout is faster (see `forward`).
    EXAMPLE_MAJOR_MAX_C = 128

    def forward(self, inner_acts: Float[Tensor, "... C"]) -> Float[Tensor, "... C"]:
        batch_shape, C = inner_acts.shape[:-1], inner_acts.shape[-1]
        x = inner_acts.reshape(-1, C)
        if C > self.EXAMPLE_MAJOR_MAX_C:
            return self._subcomponent_major(x.T.unsqueeze(-1)).reshape(*batch_shape, C)
        return self._example_major(x).reshape(*batch_shape, C)

    def _subcomponent_major(self, h: Float[Tensor, "C N 1"]) -> Float[Tensor, "N C"]:
        # (C, N, width): every layer is one batched matmul with its bias added in the same call (baddbmm), whose
        # backward is again batched matmuls. Broadcast products over (N, C, width) took 1.5x as long on a CPU
        # (forward + backward at N=4096, C=200, width 16).
        for i, layer in enumerate(self.layers):
            h = torch.baddbmm(layer.bias.unsqueeze(1), h, layer.weight)
            if i < len(self.layers) - 1:
                h = F.gelu(h)
        return h.squeeze(-1).T

    def _example_major(self, x: Float[Tensor, "N C"]) -> Float[Tensor, "N C"]:
        # (N, C, width), the first and last layers as broadcast products (their matmuls would have an inner or
        # outer size of 1): half the time of the subcomponent-major form at C=20 (tms_5-2), 0.85 of it at C=100,
        # 1.3 x it at C=200 (N=2048-4096, width 16, forward + backward, one thread).
        if len(self.layers) == 1:  # no hidden layer: one scalar affine map per subcomponent
            return x * self.layers[0].weight[:, 0, 0] + self.layers[0].bias[:, 0]
        first, *middle, last = self.layers
        h = F.gelu(torch.addcmul(first.bias, x.unsqueeze(-1), first.weight[:, 0, :]))
        for layer in middle:
            h = F.gelu(einops.einsum(h, layer.weight, "N C a, C a b -> N C b") + layer.bias)
        return (h * last.weight[:, :, 0]).sum(-1) + last.bias[:, 0]


class VectorMlpCi(nn.Module):
    """`vector_mlp`: per subcomponent, d_in -> hidden -> ... -> 1 on the whole layer input."""

    uses_inner_acts = False

    def __init__(self, C: int, d_in: int, hidden: list[int]):
        super().__init__()
        if not hidden:
            raise ValueError("vector_mlp needs at least one hidden layer")
        self.first = nn.Parameter(torch.randn(d_in, C, hidden[0]) * math.sqrt(2 / d_in))
        self.first_bias = nn.Parameter(torch.zeros(C, hidden[0]))
        dims = [*hidden, 1]
        self.rest = nn.ModuleList(
            ParallelLinear(C, a, b, gain=math.sqrt(2) if i < len(dims) - 2 else 1.0)
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))
        )

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... C"]:
        h = einops.einsum(x, self.first, "... d_in, d_in C h -> ... C h") + self.first_bias
        for layer in self.rest:
            h = layer(F.gelu(h))
        return h.squeeze(-1)


class SharedMlpCi(nn.Module):
    """`shared_mlp`: one MLP d_in -> hidden -> ... -> C."""

    uses_inner_acts = False

    def __init__(self, C: int, d_in: int, hidden: list[int]):
        super().__init__()
        dims = [d_in, *hidden, C]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            linear = nn.Linear(a, b)
            nn.init.normal_(linear.weight, std=(math.sqrt(2) if i < len(dims) - 2 else 1.0) / math.sqrt(a))
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.GELU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... C"]:
        return self.net(x)


def make_ci_fn(kind: CiFnType, C: int, d_in: int, hidden: list[int], is_embedding: bool = False) -> nn.Module:
    if is_embedding and kind != "mlp":
        raise ValueError("embedding layers only support the `mlp` causal-importance function (token ids have no "
                         "vector input)")
    return {"mlp": ScalarMlpCi, "vector_mlp": VectorMlpCi, "shared_mlp": SharedMlpCi}[kind](C, d_in, hidden)
