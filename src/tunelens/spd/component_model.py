"""A frozen target model whose chosen layers can be swapped, per call, for masked subcomponents.

Without masks a call is the plain target forward. `forward_target` also records each decomposed layer's
input, which is what the causal-importance functions read. `forward_masked` replaces the named layers by
their components under the given masks; layers not named run as the target.

Both passes attach forward hooks to the target's layers for the length of the call and remove them after it
(as the SPD reference code does), so between calls the target is untouched: usable on its own, and by any
number of component models at once.

A target made of blocks that run one after the other (a transformer's decoder layers) can name them
(`blocks`). The blocks before the first one holding a decomposed layer compute the same thing in every pass, so
`run_target` records their outputs and a masked pass given them (`prefix`) skips those blocks, each returning
its recorded output for the length of the call. `lm_mlp` decomposes layer 3 of 4: its masked passes run one
decoder layer instead of four.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tunelens.spd.ci import CiFnType, make_ci_fn
from tunelens.spd.components import EmbeddingComponents, LinearComponents, TiedLinearComponents, make_components
from tunelens.spd.sigmoids import SigmoidType, importance_pair


@dataclass
class LayerMask:
    """How one layer runs in a masked forward pass."""

    mask: Float[Tensor, "... C"]
    delta_mask: Float[Tensor, "..."] | None = None
    routing: Tensor | None = None  # bool (...): True = components, False = target layer
    inner: Float[Tensor, "... C"] | None = None  # precomputed x V, valid when the layer sees the cached input
    # with inner: the target layer's output on that input; the delta component is then computed from it (see
    # `LinearComponents.masked_forward`) instead of from the full weight delta
    target_out: Float[Tensor, "... d_out"] | None = None

    @property
    def from_target_output(self) -> bool:
        """The delta term comes from the recorded target output, not from the weight delta."""
        return self.inner is not None and self.target_out is not None

    @property
    def needs_weight_delta(self) -> bool:
        return self.delta_mask is not None and not self.from_target_output


@dataclass
class TargetPass:
    """A target forward: the output and each decomposed layer's input and output, in the order the layers ran
    (the first one's input is the same in every masked pass)."""

    out: Tensor
    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]
    prefix: list[Tensor] = field(default_factory=list)  # outputs of the blocks a masked pass may skip


@dataclass
class Importances:
    """Per layer: inner activations x V, importance for masks/metrics, importance for the penalty."""

    inner: dict[str, Tensor]
    lower: dict[str, Tensor]
    upper: dict[str, Tensor]


def distinct_rows(x: Float[Tensor, "... d"]) -> tuple[Float[Tensor, "n d"], Tensor | None]:
    """The rows of x with every all-zero row but one dropped, and for each original row its row in that set
    (None when nothing was dropped). An importance function is a function of one row, so all-zero rows share one
    value: on sparse toy inputs most rows are zero (TMS 5-2: 77 %, resid_mlp1: 37 %), and gathering that one value
    back gives the same importances, and through the gather's backward the same gradients, at a fraction of the
    cost."""
    flat = x.reshape(-1, x.shape[-1])
    nonzero = flat.ne(0).any(-1)
    n_nonzero = int(nonzero.sum())
    if n_nonzero >= len(flat) - 1:
        return flat, None
    index = torch.where(nonzero, nonzero.cumsum(0) - 1, n_nonzero)
    # index_select, not boolean or advanced indexing: its backward is an index_add, several times faster on a CPU
    # than the accumulating index_put that indexing's backward runs.
    kept = flat.index_select(0, nonzero.nonzero().squeeze(1))
    return torch.cat([kept, flat.new_zeros(1, flat.shape[-1])]), index


def distinct_tokens(V: Float[Tensor, "vocab C"], token_ids: Tensor) -> tuple[Float[Tensor, "n C"], Tensor]:
    """An embedding's inner activations are rows of V: once per distinct token, and each position's row."""
    tokens, index = torch.unique(token_ids.reshape(-1), return_inverse=True)
    return V.index_select(0, tokens), index


def expand_rows(values: Float[Tensor, "n C"], index: Tensor | None, shape: torch.Size) -> Float[Tensor, "... C"]:
    return (values if index is None else values.index_select(0, index)).reshape(shape)


def leading_blocks(blocks: tuple[str, Sequence[nn.Module]] | None, names: Sequence[str]) -> list[nn.Module]:
    """The blocks (name of their list, the blocks in running order) before the first one that holds a decomposed
    layer; none when some decomposed layer lies outside every block (an embedding runs before them all)."""
    if blocks is None:
        return []
    list_name, modules = blocks
    indices = []
    for name in names:
        if list_name and not name.startswith(f"{list_name}."):
            return []
        head = name[len(list_name) + 1 if list_name else 0:].split(".", 1)[0]
        if not head.isdigit() or int(head) >= len(modules):
            return []
        indices.append(int(head))
    return list(modules)[: min(indices)]


def module_key(name: str) -> str:
    return name.replace(".", "-")


def layer_input(name: str, args: tuple) -> Tensor:
    """The one positional input of a decomposed layer's call, as a forward hook sees it."""
    if len(args) != 1:
        raise TypeError(f"{name} was called with {len(args)} positional arguments; a decomposed layer must be "
                        "called with its input tensor alone (nn.Linear / nn.Embedding style)")
    return args[0]


class ComponentModel(nn.Module):
    def __init__(self, target: nn.Module, forward_fn: Callable[[nn.Module, Tensor], Tensor],
                 module_C: dict[str, int], ci_fn_type: CiFnType, ci_fn_hidden: list[int],
                 sigmoid_type: SigmoidType = "leaky_hard", tied: dict[str, str] | None = None,
                 blocks: tuple[str, Sequence[nn.Module]] | None = None):
        """`tied` maps a decomposed layer to another one whose target weight is its transpose: the first then
        reuses the second's subcomponents, transposed (see `TiedLinearComponents`). `blocks`: the name of the
        target's list of sequential blocks and the blocks (module docstring); None for a target without."""
        super().__init__()
        trainable = [n for n, p in target.named_parameters() if p.requires_grad]
        assert not trainable, f"target must be frozen, trainable: {trainable[:3]}"
        self.target = target
        self.forward_fn = forward_fn
        self.names = list(module_C)
        self.sigmoid_type = sigmoid_type
        modules = dict(target.named_modules())
        missing = [n for n in self.names if n not in modules]
        if missing:
            raise KeyError(f"no module named {missing[0]} in the target (have: {', '.join(list(modules)[1:12])} ...)")
        self._skippable = leading_blocks(blocks, self.names)  # a plain list: the blocks stay the target's
        self.tied = tied = dict(tied or {})
        for follower, source in tied.items():
            if follower not in module_C or source not in module_C or source in tied:
                raise KeyError(f"cannot tie {follower} to {source}: both must be decomposed, the source not tied")
            if module_C[follower] != module_C[source]:
                raise ValueError(f"tied layers {follower} and {source} need the same number of subcomponents")
        self.components = nn.ModuleDict({module_key(n): make_components(modules[n], C)
                                         for n, C in module_C.items() if n not in tied})
        for follower, source in tied.items():
            self.components[module_key(follower)] = TiedLinearComponents(modules[follower],
                                                                         self.components[module_key(source)])
        self.ci_fns = nn.ModuleDict()
        for name, C in module_C.items():
            module = modules[name]
            d_in = module.weight.shape[1] if isinstance(module, nn.Linear) else module.weight.shape[0]
            self.ci_fns[module_key(name)] = make_ci_fn(ci_fn_type, C, d_in, ci_fn_hidden,
                                                       is_embedding=isinstance(module, nn.Embedding))

    @contextmanager
    def _hooks(self, hooks: dict[str, Callable[[nn.Module, tuple, Tensor], Tensor | None]],
               on_modules: Sequence[tuple[nn.Module, Callable[[nn.Module, tuple, Tensor], None]]] = ()
               ) -> Iterator[None]:
        """Forward hooks on the named target layers (and on the given modules) for the duration of the block,
        removed even on error."""
        handles = [self.target.get_submodule(name).register_forward_hook(hook) for name, hook in hooks.items()]
        handles += [module.register_forward_hook(hook) for module, hook in on_modules]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _masked_hook(self, name: str, layer: LayerMask, weight_deltas: dict[str, Tensor] | None
                     ) -> Callable[[nn.Module, tuple, Tensor], Tensor]:
        """Replace the layer's output by its components' output under `layer`'s masks."""
        comps = self.component(name)
        if layer.needs_weight_delta and weight_deltas is None:
            raise ValueError(f"{name} has a delta mask but no weight deltas were given")

        def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
            x = layer_input(name, args)
            inner = layer.inner if layer.inner is not None else comps.inner_acts(x)
            delta = weight_deltas[name] if layer.needs_weight_delta else None  # type: ignore[index]
            out = comps.masked_forward(x, inner, layer.mask, layer.delta_mask, delta,
                                       layer.target_out if layer.from_target_output else None)
            return out if layer.routing is None else torch.where(layer.routing.unsqueeze(-1), out, output)

        return hook

    def component(self, name: str) -> LinearComponents | EmbeddingComponents:
        return self.components[module_key(name)]

    # ------------------------------------------------------------------------------------------- passes
    def run_target(self, x: Tensor) -> TargetPass:
        """The target forward with each decomposed layer's input and output (no gradients: the target is
        fixed)."""
        inputs: dict[str, Tensor] = {}
        outputs: dict[str, Tensor] = {}
        prefix: list[Tensor] = []

        def record(name: str) -> Callable[[nn.Module, tuple, Tensor], None]:
            def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
                inputs[name] = layer_input(name, args)
                outputs[name] = output

            return hook

        def record_block(module: nn.Module, args: tuple, output: Tensor) -> None:
            prefix.append(output)

        with (self._hooks({name: record(name) for name in self.names},
                          [(block, record_block) for block in self._skippable]), torch.no_grad()):
            out = self.forward_fn(self.target, x)
        return TargetPass(out, inputs, outputs, prefix)

    @property
    def n_skippable_blocks(self) -> int:
        return len(self._skippable)

    @contextmanager
    def _skipping(self, prefix: Sequence[Tensor] | None) -> Iterator[None]:
        """Each leading block returns its recorded output instead of running, for the duration of the block."""
        if not prefix:
            yield
            return
        assert len(prefix) == len(self._skippable), f"{len(prefix)} recorded outputs for {len(self._skippable)} blocks"
        # a block may already carry a forward of its own (accelerate's device hooks do): put that one back after
        own = [vars(block).get("forward") for block in self._skippable]
        for block, output in zip(self._skippable, prefix):
            block.forward = lambda *args, _output=output, **kwargs: _output  # type: ignore[method-assign]
        try:
            yield
        finally:
            for block, forward in zip(self._skippable, own):
                if forward is None:
                    del block.forward
                else:
                    block.forward = forward  # type: ignore[method-assign]

    def forward_target(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Target output and each decomposed layer's input."""
        passed = self.run_target(x)
        return passed.out, passed.inputs

    def forward_masked(self, x: Tensor, masks: dict[str, LayerMask],
                       weight_deltas: dict[str, Tensor] | None = None, prefix: Sequence[Tensor] | None = None
                       ) -> Tensor:
        """`prefix`: the leading blocks' outputs that `run_target` recorded for this very x, to skip them."""
        unknown = set(masks) - set(self.names)
        if unknown:
            raise KeyError(f"masks for layers that are not decomposed: {sorted(unknown)}")
        with (self._hooks({name: self._masked_hook(name, layer, weight_deltas) for name, layer in masks.items()}),
              self._skipping(prefix)):
            return self.forward_fn(self.target, x)

    def importances(self, layer_inputs: dict[str, Tensor]) -> Importances:
        """Each importance function runs once per distinct input, not once per example (see `distinct_rows`)."""
        inner, lower, upper = {}, {}, {}
        for name in self.names:
            comps = self.component(name)
            ci_fn = self.ci_fns[module_key(name)]
            x = layer_inputs[name]
            if isinstance(comps, EmbeddingComponents):  # the input is a token id: one row of V per distinct token
                inner_rows, index = distinct_tokens(comps.V, x)
                ci_in, batch_shape = inner_rows, x.shape
            else:  # x V once per distinct row too (a zero row's is zero)
                rows, index = distinct_rows(x)
                inner_rows = comps.inner_acts(rows)
                ci_in, batch_shape = (inner_rows if ci_fn.uses_inner_acts else rows), x.shape[:-1]
            low, up = importance_pair(ci_fn(ci_in), self.sigmoid_type)
            shape = (*batch_shape, comps.C)
            inner[name] = expand_rows(inner_rows, index, shape)
            lower[name], upper[name] = expand_rows(low, index, shape), expand_rows(up, index, shape)
        return Importances(inner, lower, upper)

    def weight_deltas(self) -> dict[str, Tensor]:
        """W − Σ_c (rank-one pieces) per layer: the faithfulness residual and the delta component's weight."""
        return {n: self.component(n).target_weight() - self.component(n).weight() for n in self.names}

    def trainable_state(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("target.")}
