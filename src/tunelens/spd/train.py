"""The SPD optimisation loop: build the target, fit components and importance functions, evaluate, save.

One step reads as: sample a batch → target forward (caching layer inputs) → importances → loss terms →
weighted total → backward → clip → AdamW step. The target forward, the inner activations x V and the weight
deltas are computed once per step and shared by every loss term that can use them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tunelens.lm.scoring import next_token_ce
from tunelens.runs import Run, resolve_device
from tunelens.schedules import schedule_value
from tunelens.spd import metrics
from tunelens.spd.component_model import ComponentModel, Importances, LayerMask
from tunelens.spd.configs import SpdConfig
from tunelens.spd.losses import (
    annealed_p,
    faithfulness_loss,
    importance_minimality_loss,
    kl_output_loss,
    mse_output_loss,
    stochastic_mask,
)
from tunelens.spd.targets import Target

OutputLoss = Callable[[Tensor, Tensor], Tensor]
OUTPUT_LOSSES: dict[str, OutputLoss] = {"mse": mse_output_loss, "kl": kl_output_loss}


# ------------------------------------------------------------------------------------------------ set-up


def build_target(config: SpdConfig, device: torch.device, log: Callable[[str], None],
                 weights: dict[str, Tensor] | None = None) -> Target:
    if config.target.kind == "tms":
        from tunelens.spd.targets.tms import build_tms_target

        return build_tms_target(config.target, device, log, weights)
    if config.target.kind == "resid_mlp":
        from tunelens.spd.targets.resid_mlp import build_resid_mlp_target

        return build_resid_mlp_target(config.target, device, log, weights)
    if config.target.kind == "lm":
        from tunelens.spd.targets.lm import build_lm_target

        return build_lm_target(config.target, device, log, weights)
    raise AssertionError(f"unhandled target kind {config.target.kind}")


def build_component_model(config: SpdConfig, target: Target) -> ComponentModel:
    return ComponentModel(target.model, target.forward_fn, config.components_per_module(),
                          config.ci_fn_type, list(config.ci_fn_hidden), config.sigmoid_type,
                          tied=target.tied_modules if config.tie_components else None)


# ------------------------------------------------------------------------------------------------- masks


def draw_masks(importances: dict[str, Tensor], use_delta: bool, names: list[str] | None = None,
               inner: dict[str, Tensor] | None = None) -> dict[str, LayerMask]:
    """Fresh stochastic masks for the named layers (all by default)."""
    names = list(importances) if names is None else names
    return {
        name: LayerMask(
            mask=stochastic_mask(importances[name]),
            delta_mask=torch.rand(importances[name].shape[:-1], device=importances[name].device) if use_delta else None,
            inner=inner[name] if inner is not None else None,
        )
        for name in names
    }


def subset_routing(batch_shape: torch.Size, n_layers: int, device: torch.device) -> Tensor:
    """Per example, k ~ U{1..L} layers chosen uniformly at random: bool (n_layers, *batch_shape)."""
    k = torch.randint(1, n_layers + 1, batch_shape, device=device)
    ranks = torch.rand((n_layers, *batch_shape), device=device).argsort(dim=0).argsort(dim=0)
    return ranks < k


# ------------------------------------------------------------------------------------------------ losses


@dataclass
class StepInputs:
    """What one batch gives every loss term: the batch, the target's output and the importances."""

    x: Tensor
    target_out: Tensor
    importances: Importances
    weight_deltas: dict[str, Tensor]


def prepare(model: ComponentModel, x: Tensor) -> StepInputs:
    target_out, layer_inputs = model.forward_target(x)
    return StepInputs(x, target_out, model.importances(layer_inputs), model.weight_deltas())


def loss_terms(model: ComponentModel, inputs: StepInputs, config: SpdConfig, output_loss: OutputLoss,
               progress: float) -> dict[str, Tensor]:
    """Every loss term with a non-zero coefficient (unweighted)."""
    coeffs, use_delta = config.loss, config.use_delta_component
    lower, deltas = inputs.importances.lower, inputs.weight_deltas
    n_samples = config.n_mask_samples

    def recon(masks: dict[str, LayerMask]) -> Tensor:
        return output_loss(model.forward_masked(inputs.x, masks, deltas), inputs.target_out)

    terms: dict[str, Tensor] = {}
    if coeffs.faithfulness > 0:
        terms["faithfulness"] = faithfulness_loss(deltas)
    if coeffs.importance_minimality > 0:
        imp = config.importance_minimality
        p = annealed_p(progress, imp.p, imp.p_final, imp.p_anneal_start_frac, imp.p_anneal_end_frac)
        terms["importance_minimality"] = importance_minimality_loss(inputs.importances.upper, p, imp.eps)
    if coeffs.stochastic_recon > 0:
        terms["stochastic_recon"] = sum(recon(draw_masks(lower, use_delta)) for _ in range(n_samples)) / n_samples
    if coeffs.stochastic_recon_layerwise > 0:
        # Only layer l is replaced, so it sees the cached target input and its inner acts can be reused.
        per_layer = [recon(draw_masks(lower, use_delta, [name], inputs.importances.inner))
                     for _ in range(n_samples) for name in model.names]
        terms["stochastic_recon_layerwise"] = sum(per_layer) / len(per_layer)
    if coeffs.stochastic_recon_subset > 0:
        total = 0.0
        for _ in range(n_samples):
            masks = draw_masks(lower, use_delta)
            routing = subset_routing(next(iter(lower.values())).shape[:-1], len(model.names), inputs.x.device)
            for route, name in zip(routing, model.names):
                masks[name].routing = route
            total = total + recon(masks)
        terms["stochastic_recon_subset"] = total / n_samples
    if coeffs.ci_masked_recon > 0:
        terms["ci_masked_recon"] = recon({name: LayerMask(mask=g) for name, g in lower.items()})
    if coeffs.pgd_recon > 0:
        terms["pgd_recon"] = pgd_recon_loss(model, inputs, config, output_loss)
    return terms


def pgd_recon_loss(model: ComponentModel, inputs: StepInputs, config: SpdConfig, output_loss: OutputLoss) -> Tensor:
    """Reconstruction under masks m = g + (1 − g)·s whose sources s ∈ [0, 1] are pushed by signed-gradient
    ascent to make the reconstruction as bad as possible; the final loss keeps its gradient to the model."""
    pgd, use_delta = config.pgd, config.use_delta_component
    lower = inputs.importances.lower

    def source_shape(g: Tensor) -> tuple[int, ...]:
        return tuple(g.shape) if pgd.mask_scope == "per_example" else (g.shape[-1],)

    def init(shape: tuple[int, ...], device: torch.device) -> Tensor:
        if pgd.init == "random":
            return torch.rand(shape, device=device)
        return torch.full(shape, 1.0 if pgd.init == "ones" else 0.0, device=device)

    sources = {n: init(source_shape(g), g.device) for n, g in lower.items()}
    delta_sources = ({n: init(tuple(g.shape[:-1]) if pgd.mask_scope == "per_example" else (), g.device)
                      for n, g in lower.items()} if use_delta else {})

    def masks_from(src: dict[str, Tensor], dsrc: dict[str, Tensor], detach: bool) -> dict[str, LayerMask]:
        out = {}
        for name, g in lower.items():
            g = g.detach() if detach else g
            delta = dsrc[name].expand(g.shape[:-1]) if use_delta else None
            out[name] = LayerMask(mask=g + (1 - g) * src[name], delta_mask=delta)
        return out

    for _ in range(pgd.n_steps):
        leaves = [s.requires_grad_(True) for s in [*sources.values(), *delta_sources.values()]]
        with torch.enable_grad():  # the ascent needs gradients even when evaluating under no_grad
            loss = output_loss(model.forward_masked(inputs.x, masks_from(sources, delta_sources, True),
                                                    inputs.weight_deltas), inputs.target_out)
            grads = torch.autograd.grad(loss, leaves)
        stepped = [(s + pgd.step_size * gr.sign()).clamp(0, 1).detach() for s, gr in zip(leaves, grads)]
        sources = dict(zip(sources, stepped[: len(sources)]))
        delta_sources = dict(zip(delta_sources, stepped[len(sources):]))
    return output_loss(model.forward_masked(inputs.x, masks_from(sources, delta_sources, False),
                                            inputs.weight_deltas), inputs.target_out)


def total_loss(terms: dict[str, Tensor], config: SpdConfig) -> Tensor:
    coeffs = config.loss.model_dump()
    return sum(coeffs[name] * value for name, value in terms.items())  # type: ignore[return-value]


# -------------------------------------------------------------------------------------------- evaluation


def flat_importances(importances: dict[str, Tensor]) -> dict[str, Tensor]:
    return {n: g.reshape(-1, g.shape[-1]) for n, g in importances.items()}


@torch.no_grad()
def one_hot_importances(model: ComponentModel, target: Target) -> dict[str, Tensor] | None:
    if target.one_hot_inputs is None:
        return None
    _, layer_inputs = model.forward_target(target.one_hot_inputs)
    return flat_importances(model.importances(layer_inputs).lower)


def pattern_errors(one_hot: dict[str, Tensor], target: Target, tol: float) -> dict[str, int]:
    errors = {}
    for pattern in target.ci_patterns:
        joined = torch.cat([one_hot[name] for name in pattern.layers], dim=-1)
        key = "+".join(pattern.layers)
        if pattern.kind == "identity":
            errors[key] = metrics.identity_pattern_error(joined, tol)
        else:
            errors[key] = metrics.dense_pattern_error(joined, pattern.k, tol)
    return errors


def ground_truth_match(model: ComponentModel, target: Target) -> dict[str, tuple[float, float]]:
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
    """Per-layer liveness, L0, ground-truth match; pattern errors on one-hot inputs; every loss term."""
    x = target.eval_batch(config.eval.batch_size) if target.eval_batch else target.sample_batch(config.eval.batch_size)
    inputs = prepare(model, x)
    threshold = config.eval.ci_alive_threshold
    flat = flat_importances(inputs.importances.lower)
    layers: dict[str, dict[str, float]] = {
        name: {"n_alive": metrics.n_alive(g, threshold), "ci_l0": metrics.ci_l0(g, threshold)} for name, g in flat.items()
    }
    for name in flat:
        comps = model.component(name)
        norms = metrics.subcomponent_norms(comps.V, comps.U)  # evaluate runs without gradients
        layers[name]["n_large"] = metrics.n_large(norms, config.eval.large_norm_frac)
    for name, (mmcs, ml2r) in ground_truth_match(model, target).items():
        layers[name].update(mmcs=mmcs, ml2r=ml2r)
    result: dict[str, Any] = {"layers": layers}
    one_hot = one_hot_importances(model, target)
    if one_hot is not None and target.ci_patterns:
        errors = pattern_errors(one_hot, target, config.eval.pattern_tolerance)
        result["identity_ci_error"] = sum(errors.values())
        result["ci_pattern_errors"] = errors
    terms = loss_terms(model, inputs, config, output_loss, progress)
    result.update({f"loss_{name}": float(value) for name, value in terms.items()})
    result["loss_total"] = float(total_loss(terms, config))
    result["faithfulness"] = float(faithfulness_loss(inputs.weight_deltas))
    all_on = {n: LayerMask(mask=torch.ones_like(g)) for n, g in inputs.importances.lower.items()}
    unmasked_out = model.forward_masked(x, all_on, inputs.weight_deltas)
    result["unmasked_recon"] = float(output_loss(unmasked_out, inputs.target_out))
    if target.output_loss == "kl":  # token ids in, logits out: report next-token losses too
        ci_masked_out = model.forward_masked(x, {n: LayerMask(mask=g) for n, g in inputs.importances.lower.items()})
        result["kl"] = float(kl_output_loss(ci_masked_out, inputs.target_out))
        result["ce_target"] = float(next_token_ce(inputs.target_out, x))
        result["ce_masked"] = float(next_token_ce(ci_masked_out, x))
        result["ce_unmasked"] = float(next_token_ce(unmasked_out, x))
    return result


# -------------------------------------------------------------------------------------------------- loop


def faithfulness_warmup(model: ComponentModel, config: SpdConfig) -> float:
    """Fit Σ U V to W before the main loop, so the reconstruction losses start from a faithful model."""
    params = list(model.components.parameters())  # each once, also where layers share subcomponents
    optimizer = torch.optim.AdamW(params, lr=config.optim.faithfulness_warmup_lr,
                                  weight_decay=config.optim.faithfulness_warmup_weight_decay)
    loss = torch.tensor(float("nan"))
    for _ in range(config.optim.faithfulness_warmup_steps):
        loss = faithfulness_loss(model.weight_deltas())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


def make_optimizer(model: ComponentModel, config: SpdConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay over the components and CI functions (the target is frozen)."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.optim.lr, weight_decay=0.0)


def optimizer_step(model: ComponentModel, target: Target, config: SpdConfig, optimizer: torch.optim.Optimizer,
                   output_loss: OutputLoss, progress: float, lr: float
                   ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    """One SPD step on a fresh batch: (total loss, unweighted terms, gradient norm before clipping or None)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    inputs = prepare(model, target.sample_batch(config.optim.batch_size))
    terms = loss_terms(model, inputs, config, output_loss, progress)
    loss = total_loss(terms, config)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = None
    if config.optim.grad_clip_norm:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip_norm)
    optimizer.step()
    return loss, terms, grad_norm


def optimize(model: ComponentModel, target: Target, config: SpdConfig, run: Run | None = None) -> dict[str, Any]:
    """Run the SPD optimisation in place; returns the final evaluation."""
    optim = config.optim
    output_loss = OUTPUT_LOSSES[target.output_loss]
    if optim.faithfulness_warmup_steps:
        warm = faithfulness_warmup(model, config)
        if run:
            run.log(f"faithfulness warm-up: {optim.faithfulness_warmup_steps} steps, loss {warm:.3e}")
    optimizer = make_optimizer(model, config)
    with run.progress(optim.steps, "SPD") if run else nullcontext() as bar:
        for step in range(optim.steps):
            progress = step / optim.steps
            lr = schedule_value(optim.lr_schedule, optim.lr, step, optim.steps)
            loss, terms, grad_norm = optimizer_step(model, target, config, optimizer, output_loss, progress, lr)
            if run and (step % config.eval.log_every == 0 or step == optim.steps - 1):
                record = {f"train/{k}": v.item() for k, v in terms.items()}
                record.update({"train/total": loss.item(), "lr": lr})
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm.item()
                run.log_metrics(step, record)
            if run and (step + 1) % config.eval.every == 0 and step + 1 < optim.steps:
                run.log_metrics(step, {"eval": evaluate(model, target, config, output_loss, progress)})
            if bar is not None:
                bar.update(status=f"loss {loss.item():.3e}")
    final = evaluate(model, target, config, output_loss, 1.0)
    if run:
        run.log_metrics(optim.steps, {"eval": final})
    return final


def run(config: SpdConfig, run: Run) -> dict[str, Any]:
    device = resolve_device(config.device)
    target = build_target(config, device, run.log)
    model = build_component_model(config, target).to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run.log(f"decomposing {', '.join(model.names)} with {n_params} trainable parameters on {device}")
    final = optimize(model, target, config, run)
    summary: dict[str, Any] = {"steps": config.optim.steps, **final, "target": target.info}
    if config.save_checkpoint:
        run.save_checkpoint("components", model.trainable_state())
        if target.save_weights:
            run.save_checkpoint("target", target.state())
    from tunelens.spd.figures import plot_all

    plot_all(model, target, config, run, one_hot_importances(model, target))
    run.log(_headline(final))
    return summary


def _headline(final: dict[str, Any]) -> str:
    parts = [f"{name}: alive {v['n_alive']} (large {v['n_large']}), L0 {v['ci_l0']:.3f}"
             + (f", mmcs {v['mmcs']:.4f}, ml2r {v['ml2r']:.3f}" if "mmcs" in v else "")
             for name, v in final["layers"].items()]
    if "identity_ci_error" in final:
        parts.append(f"identity_ci_error {final['identity_ci_error']}")
    return "; ".join(parts)


def load_decomposition(run_dir: str | Path, device: str = "cpu") -> tuple[SpdConfig, Target, ComponentModel]:
    """A finished run's config, target and trained components, for analysis in a notebook or script."""
    import yaml

    from tunelens.config import UsageError, validate_config
    from tunelens.runs import load_tensors

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UsageError(f"no config.yaml in {run_dir} (not a run directory)")
    raw = yaml.safe_load(config_path.read_text())
    if isinstance(raw, dict):
        raw.setdefault("tie_components", False)  # runs written before the option existed decomposed untied
    config = validate_config(SpdConfig, raw, str(config_path))
    target_path = run_dir / "target.safetensors"
    weights = load_tensors(target_path) if target_path.is_file() else None  # LMs are reloaded from their source
    target = build_target(config, torch.device(device), lambda message: None, weights)
    model = build_component_model(config, target)
    state = {f"target.{k}": v for k, v in target.model.state_dict().items()}
    state.update(load_tensors(run_dir / "components.safetensors"))
    model.load_state_dict(state)
    return config, target, model
