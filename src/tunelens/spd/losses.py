"""SPD's loss terms: pure functions of tensors, and the reconstruction losses composed from them.

Notation: l indexes decomposed layers, c subcomponents, g the importance (lower-leaky for masks, upper-leaky
for the penalty), r ~ U(0, 1).
- faithfulness      Σ_l ‖W_l − Σ_c U_lc V_lcᵀ‖²_F / Σ_l (number of entries of W_l)
- stochastic masks  m = g + (1 − g) · r      (fresh r for every loss term and every mask sample)
- output losses     MSE: mean squared error over all output entries;
                    KL: Σ_vocab p_target (log p_target − log p_pred), averaged over positions
- minimality        Σ_l Σ_c mean_batch (g_upper + ε)^p, with p annealed linearly between two values
The reconstruction losses are output losses of masked forward passes of a `ComponentModel`:
- stochastic        every layer under stochastic masks
- layerwise         one layer at a time under stochastic masks, the others running as the target
- subset            per example, a random subset of k ~ U{1..L} layers under stochastic masks
- importance-masked every layer with m = g
- adversarial (pgd) every layer (or, with `pgd.routing: subset`, a random subset of layers as above) with
                    m = g + (1 − g)·s, the sources s ∈ [0, 1] chosen by signed-gradient ascent to make the
                    reconstruction as bad as possible
The reconstruction losses run on the rows whose output can differ from the target's (`active_rows`), a
layer that sees the input the target forward recorded (the first layer to run; in the layerwise loss the one
replaced) reuses its inner activations and target output instead of recomputing them, and the target's blocks
before the first decomposed layer are not run again (`ComponentModel`'s `prefix`).
`loss_terms` evaluates the terms a config switches on, from one `StepInputs` (the batch, the target's output,
the importances and the weight deltas) shared by all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from tunelens.spd.component_model import ComponentModel, Importances, LayerMask, TargetPass
from tunelens.spd.configs import LossCoeffs, Pgd, SpdConfig

OutputLoss = Callable[[Tensor, Tensor], Tensor]


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


OUTPUT_LOSSES: dict[str, OutputLoss] = {"mse": mse_output_loss, "kl": kl_output_loss}


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


# ------------------------------------------------------------------------------------------------- masks


def draw_masks(rows: ReconRows, use_delta: bool, names: list[str] | None = None,
               cached: Collection[str] = ()) -> dict[str, LayerMask]:
    """Fresh stochastic masks for the named layers (all by default); the layers in `cached` see the input the
    target forward recorded, so they reuse its inner activations and output."""
    names = list(rows.lower) if names is None else names
    return {
        name: LayerMask(
            mask=stochastic_mask(rows.lower[name]),
            delta_mask=torch.rand(rows.lower[name].shape[:-1], device=rows.x.device) if use_delta else None,
            **rows.recorded(name, name in cached),
        )
        for name in names
    }


def subset_routing(batch_shape: torch.Size, n_layers: int, device: torch.device) -> Bool[Tensor, "n_layers ..."]:
    """Per example, k ~ U{1..L} layers chosen uniformly at random: bool (n_layers, *batch_shape)."""
    k = torch.randint(1, n_layers + 1, batch_shape, device=device)
    ranks = torch.rand((n_layers, *batch_shape), device=device).argsort(dim=0).argsort(dim=0)
    return ranks < k


def subset_routes(rows: ReconRows, names: list[str]) -> dict[str, Bool[Tensor, "..."]]:
    """Per layer, whether each reconstruction row runs it under its mask (a fresh `subset_routing` draw)."""
    batch_shape = next(iter(rows.lower.values())).shape[:-1]
    return dict(zip(names, subset_routing(batch_shape, len(names), rows.x.device)))


# ------------------------------------------------------------------------------- reconstruction losses


def active_rows(layer_inputs: Mapping[str, Tensor], n_rows: int) -> Tensor | None:
    """Indices of the batch rows in which some decomposed layer's input is non-zero; None to keep every row
    (also when no row is active, so that a batch is never empty).

    A row in which every decomposed layer sees an all-zero input gives exactly the target's output under any
    masks: going through the layers in order, each one's input equals the target's (zero), so x V = 0 and the
    delta term is 0, leaving the target's bias, the target layer's output on zero. Such a row adds exactly zero
    to every reconstruction loss and to its gradient, and dropping it changes only the cost (TMS 5-2: 77 % of
    the rows, resid_mlp1: 37 %). Applies where each layer's input has one row per example, (batch, d), and the
    rows do not interact (the toy targets); for anything else (token ids, sequences) every row is kept."""
    if any(t.dim() != 2 or t.shape[0] != n_rows or not t.is_floating_point() for t in layer_inputs.values()):
        return None
    active = torch.stack([t.ne(0).any(-1) for t in layer_inputs.values()]).any(0)
    n_active = int(active.sum())
    if n_active in (0, n_rows):
        return None
    return active.nonzero().squeeze(1)


@dataclass
class ReconRows:
    """What the reconstruction losses read: the batch rows whose masked output can differ from the target's
    (`active_rows`), their importances, inner activations and target layer outputs, and `frac`, the fraction of
    the batch they are: a loss averaged over these rows, times frac, is the loss averaged over the batch."""

    x: Tensor
    target_out: Tensor
    lower: dict[str, Tensor]
    inner: dict[str, Tensor]
    layer_outputs: dict[str, Tensor]
    first_layer: str  # the first decomposed layer to run: its input is the recorded one in every masked pass
    frac: float
    prefix: list[Tensor] = field(default_factory=list)  # recorded outputs of the blocks masked passes skip

    def recorded(self, name: str, sees_recorded_input: bool, detach: bool = False) -> dict[str, Tensor]:
        """A `LayerMask`'s `inner` and `target_out` for a layer that sees the recorded input (else none)."""
        if not sees_recorded_input:
            return {}
        inner = self.inner[name]
        return {"inner": inner.detach() if detach else inner, "target_out": self.layer_outputs[name]}


class StepInputs:
    """What one batch gives every loss term: the batch, the target's output, the importances of every row (for
    the minimality term), the rows the reconstruction terms read, and the weight deltas, computed on first use
    and then shared."""

    def __init__(self, model: ComponentModel, x: Tensor, passed: TargetPass, importances: Importances):
        self.model, self.x, self.target_out, self.importances = model, x, passed.out, importances
        index = active_rows(passed.inputs, len(x))

        def rows(t: Tensor) -> Tensor:
            return t if index is None else t.index_select(0, index)

        self.recon = ReconRows(
            x=rows(x), target_out=rows(passed.out),
            lower={n: rows(g) for n, g in importances.lower.items()},
            inner={n: rows(a) for n, a in importances.inner.items()},
            layer_outputs={n: rows(o) for n, o in passed.outputs.items()},
            first_layer=next(iter(passed.inputs)), frac=1.0 if index is None else len(index) / len(x),
            # skipped blocks only where every row is kept (sequence targets); with a subset of rows, run them all
            prefix=passed.prefix if index is None else [])

    @cached_property
    def weight_deltas(self) -> dict[str, Tensor]:
        return self.model.weight_deltas()


def prepare(model: ComponentModel, x: Tensor) -> StepInputs:
    passed = model.run_target(x)
    return StepInputs(model, x, passed, model.importances(passed.inputs))


def masked_recon(model: ComponentModel, inputs: StepInputs, output_loss: OutputLoss,
                 masks: dict[str, LayerMask]) -> Tensor:
    """The output loss of one masked pass over the reconstruction rows, as a batch average."""
    rows = inputs.recon
    needs_deltas = any(m.needs_weight_delta for m in masks.values())
    out = model.forward_masked(rows.x, masks, inputs.weight_deltas if needs_deltas else None, rows.prefix)
    return output_loss(out, rows.target_out) * rows.frac


def stochastic_recon_loss(model: ComponentModel, inputs: StepInputs, output_loss: OutputLoss, use_delta: bool,
                          n_samples: int) -> Tensor:
    rows = inputs.recon
    return sum(masked_recon(model, inputs, output_loss, draw_masks(rows, use_delta, cached=[rows.first_layer]))
               for _ in range(n_samples)) / n_samples  # type: ignore[return-value]


def stochastic_recon_layerwise_loss(model: ComponentModel, inputs: StepInputs, output_loss: OutputLoss,
                                    use_delta: bool, n_samples: int) -> Tensor:
    """Only layer l is replaced, so it sees the recorded target input: its inner acts and output are reused."""
    per_layer = [masked_recon(model, inputs, output_loss, draw_masks(inputs.recon, use_delta, [name], [name]))
                 for _ in range(n_samples) for name in model.names]
    return sum(per_layer) / len(per_layer)  # type: ignore[return-value]


def stochastic_recon_subset_loss(model: ComponentModel, inputs: StepInputs, output_loss: OutputLoss,
                                 use_delta: bool, n_samples: int) -> Tensor:
    rows = inputs.recon
    total = 0.0
    for _ in range(n_samples):
        masks = draw_masks(rows, use_delta, cached=[rows.first_layer])
        for name, route in subset_routes(rows, model.names).items():
            masks[name].routing = route
        total = total + masked_recon(model, inputs, output_loss, masks)
    return total / n_samples  # type: ignore[return-value]


def ci_masked_recon_loss(model: ComponentModel, inputs: StepInputs, output_loss: OutputLoss) -> Tensor:
    rows = inputs.recon
    masks = {name: LayerMask(mask=g, **rows.recorded(name, name == rows.first_layer))
             for name, g in rows.lower.items()}
    return masked_recon(model, inputs, output_loss, masks)


def pgd_recon_loss(model: ComponentModel, inputs: StepInputs, output_loss: OutputLoss, pgd: Pgd,
                   use_delta: bool) -> Tensor:
    """Reconstruction under masks m = g + (1 − g)·s whose sources s ∈ [0, 1] are pushed by signed-gradient
    ascent to make the reconstruction as bad as possible; the final loss keeps its gradient to the model."""
    rows = inputs.recon
    lower, first = rows.lower, rows.first_layer

    def source_shape(g: Tensor) -> tuple[int, ...]:
        return tuple(g.shape) if pgd.mask_scope == "per_example" else (g.shape[-1],)

    def init(shape: tuple[int, ...], device: torch.device) -> Tensor:
        if pgd.init == "random":
            return torch.rand(shape, device=device)
        return torch.full(shape, 1.0 if pgd.init == "ones" else 0.0, device=device)

    routing = subset_routes(rows, model.names) if pgd.routing == "subset" else {}
    sources = {n: init(source_shape(g), g.device) for n, g in lower.items()}
    delta_sources = ({n: init(tuple(g.shape[:-1]) if pgd.mask_scope == "per_example" else (), g.device)
                      for n, g in lower.items()} if use_delta else {})

    def masks_from(src: dict[str, Tensor], dsrc: dict[str, Tensor], detach: bool) -> dict[str, LayerMask]:
        out = {}
        for name, g in lower.items():
            g = g.detach() if detach else g
            delta = dsrc[name].expand(g.shape[:-1]) if use_delta else None
            out[name] = LayerMask(mask=g + (1 - g) * src[name], delta_mask=delta, routing=routing.get(name),
                                  **rows.recorded(name, name == first, detach))
        return out

    for _ in range(pgd.n_steps):
        leaves = [s.requires_grad_(True) for s in [*sources.values(), *delta_sources.values()]]
        with torch.enable_grad():  # the ascent needs gradients even when evaluating under no_grad
            loss = masked_recon(model, inputs, output_loss, masks_from(sources, delta_sources, True))
            grads = torch.autograd.grad(loss, leaves)
        stepped = [(s + pgd.step_size * gr.sign()).clamp(0, 1).detach() for s, gr in zip(leaves, grads)]
        sources = dict(zip(sources, stepped[: len(sources)]))
        delta_sources = dict(zip(delta_sources, stepped[len(sources):]))
    return masked_recon(model, inputs, output_loss, masks_from(sources, delta_sources, False))


# ------------------------------------------------------------------------------------------ combination


def loss_terms(model: ComponentModel, inputs: StepInputs, config: SpdConfig, output_loss: OutputLoss,
               progress: float) -> dict[str, Tensor]:
    """Every loss term with a non-zero coefficient (unweighted), in a fixed order: each draws its own masks."""
    coeffs, use_delta, n_samples = config.loss, config.use_delta_component, config.n_mask_samples
    terms: dict[str, Tensor] = {}
    if coeffs.faithfulness > 0:
        terms["faithfulness"] = faithfulness_loss(inputs.weight_deltas)
    if coeffs.importance_minimality > 0:
        imp = config.importance_minimality
        p = annealed_p(progress, imp.p, imp.p_final, imp.p_anneal_start_frac, imp.p_anneal_end_frac)
        terms["importance_minimality"] = importance_minimality_loss(inputs.importances.upper, p, imp.eps)
    if coeffs.stochastic_recon > 0:
        terms["stochastic_recon"] = stochastic_recon_loss(model, inputs, output_loss, use_delta, n_samples)
    if coeffs.stochastic_recon_layerwise > 0:
        terms["stochastic_recon_layerwise"] = stochastic_recon_layerwise_loss(model, inputs, output_loss, use_delta,
                                                                              n_samples)
    if coeffs.stochastic_recon_subset > 0:
        terms["stochastic_recon_subset"] = stochastic_recon_subset_loss(model, inputs, output_loss, use_delta,
                                                                        n_samples)
    if coeffs.ci_masked_recon > 0:
        terms["ci_masked_recon"] = ci_masked_recon_loss(model, inputs, output_loss)
    if coeffs.pgd_recon > 0:
        terms["pgd_recon"] = pgd_recon_loss(model, inputs, output_loss, config.pgd, use_delta)
    return terms


def total_loss(terms: dict[str, Tensor], coeffs: LossCoeffs, scales: Mapping[str, float] | None = None) -> Tensor:
    """Σ coefficient × term, each coefficient times its scale where `scales` gives one (a warm-up)."""
    weights = coeffs.model_dump()
    scales = scales or {}
    return sum(weights[name] * scales.get(name, 1.0) * value  # type: ignore[return-value]
               for name, value in terms.items())
