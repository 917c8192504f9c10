"""The one training loop for causal LMs: full fine-tuning or adapters, one process or several (torchrun).

A step reads: the step's global batch (a pure function of seed and step) → this rank's rows → micro-batches →
forward → per-row losses (+ a study's extra per-row term) → backward (gradients accumulate) → clip → AdamW step →
scheduler step. The objective is the mean per-row loss over the global batch, and every micro-batch's part of it
is normalised by the global batch size, so the result does not depend on how the batch is split over processes
or micro-batches.

Studies change the loop through `Hooks`, not by copying it: `row_loss` replaces the per-row loss (default: mean
next-token loss over the row's masked tokens), `extra_loss` adds a per-row term, and `around_batch` wraps each
micro-batch's forward and backward, e.g. to gate gradients row by row (gradient routing).

Checkpoints for resuming (trainable weights, optimizer, scheduler, step) are written atomically to one directory;
a run started again with a checkpoint from the same config continues from it. Batches depend only on the step,
so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn

from tunelens import distributed
from tunelens.config import Schedule, UsageError
from tunelens.lm.examples import Batch, TokenizedExample, batches_by_length, collate
from tunelens.lm.scoring import per_example_loss
from tunelens.runs import Run, load_tensors, save_tensors, write_json
from tunelens.schedules import lr_scheduler

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TrainSettings(BaseModel):
    """Optimisation of a causal LM (a config section any study can embed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: PositiveInt = Field(200, description="Optimiser steps (unless `epochs` is set).")
    epochs: PositiveFloat | None = Field(None, description="Passes over the training rows; when set, the steps are "
                                         "ceil(epochs x rows / batch_size) and `steps` is ignored.")
    batch_size: PositiveInt = Field(16, description="Examples per optimiser step, all processes together.")
    grad_accum_steps: PositiveInt = Field(1, description="Micro-batches per step on each process.")
    lr: PositiveFloat = Field(1e-3, description="Peak learning rate (AdamW).")
    weight_decay: NonNegativeFloat = Field(0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    lr_schedule: Schedule = Field(Schedule(kind="cosine", warmup_frac=0.05), description="Learning-rate shape.")
    max_grad_norm: PositiveFloat | None = Field(1.0, description="Clip the global gradient norm; null = off.")
    eval_every: NonNegativeInt = Field(0, description="Held-out evaluation every this many steps; 0 = at the end.")
    eval_batch_size: PositiveInt = Field(64, description="Rows per forward pass when evaluating.")
    checkpoint_every: NonNegativeInt = Field(50, description="Write a resumable checkpoint every this many steps; "
                                             "0 = never.")
    log_every: PositiveInt = Field(10, description="Log the training loss every this many steps.")

    def for_rows(self, n_rows: int) -> TrainSettings:
        """These settings with `steps` fixed for `n_rows` training rows (a no-op without `epochs`)."""
        if self.epochs is None:
            return self
        return self.model_copy(update={"steps": max(1, math.ceil(self.epochs * n_rows / self.batch_size))})


# ----------------------------------------------------------------------------------------------- hooks

RowLoss = Callable[[nn.Module, Batch, Tensor], Float[Tensor, "batch"]]


def completion_loss(model: nn.Module, batch: Batch, logits: Tensor) -> Float[Tensor, "batch"]:
    """Mean next-token loss of each row over its loss-masked tokens."""
    return per_example_loss(logits, batch.input_ids, batch.loss_mask)


ParamGroups = Callable[[nn.Module], dict[str, list[nn.Parameter]]]
GroupsToStep = Callable[[Sequence[TokenizedExample]], set[str]]


@dataclass
class Hooks:
    """How a study changes the loop. `param_groups` splits the trainable parameters into named groups, each with
    its own AdamW and schedule; `groups_to_step` names, from the step's whole global batch (the same on every
    process), the groups whose optimiser steps (the schedules always advance together)."""

    row_loss: RowLoss = completion_loss
    extra_loss: RowLoss | None = None
    around_batch: Callable[[nn.Module, Batch], AbstractContextManager] | None = None
    param_groups: ParamGroups | None = None
    groups_to_step: GroupsToStep | None = None
    after_step: Callable[[int], None] | None = None  # called with the number of steps done, after each step


@contextmanager
def row_gradient_scale(modules: Sequence[nn.Module], scale: Float[Tensor, "batch"]) -> Iterator[None]:
    """Inside the block, the gradient reaching each module's output is multiplied row by row by `scale` (the
    outputs' values are unchanged): with a 0 a row does not train the module, nor anything that reaches the loss
    only through it. The hooks are removable forward hooks, gone after the block."""

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        row_scale = scale.to(output.device, output.dtype).view(-1, *([1] * (output.dim() - 1)))
        return output * row_scale + output.detach() * (1 - row_scale)

    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _RowGatedLinear(torch.autograd.Function):
    """y = x W^T + b whose parameter gradients count only the rows with gate 1, while the input gradient counts
    every row: one forward pass, exact (the weight gradient is the sum over gated-in rows of their outer
    products)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, gate: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight, gate)
        ctx.has_bias = bias is not None
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, gate = ctx.saved_tensors
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        gated = grad_out * gate.to(grad_out).view(-1, *([1] * (grad_out.dim() - 1)))
        flat = gated.reshape(-1, gated.shape[-1])
        grad_weight = flat.T @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        grad_bias = flat.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None


def gated_linear(x: Tensor, weight: Tensor, bias: Tensor | None, gate: Float[Tensor, "batch"]) -> Tensor:
    """`linear(x, weight, bias)` where rows with gate 0 send no gradient to weight and bias (gradient to x is kept)."""
    return _RowGatedLinear.apply(x, weight, bias, gate)


@contextmanager
def row_parameter_gate(modules: Sequence[nn.Module], gate: Float[Tensor, "batch"]) -> Iterator[None]:
    """Inside the block, rows whose gate is 0 send no gradient to each module's own parameters, while gradient
    still flows through the module to its inputs; values are unchanged. A linear layer's output is recomputed by
    `gated_linear`; any other module is run a second time with its parameters detached for those rows. Modules must
    return one tensor with the batch first."""
    running: set[int] = set()

    def hook(module: nn.Module, args: Any, kwargs: Any, output: Tensor) -> Tensor | None:
        if id(module) in running or bool((gate == 1).all()):
            return None
        if isinstance(module, nn.Linear):
            return gated_linear(args[0], module.weight, module.bias, gate)
        running.add(id(module))
        try:
            detached = {name: p.detach() for name, p in module.named_parameters(recurse=False)}
            frozen = torch.func.functional_call(module, detached, args, kwargs, strict=False)
        finally:
            running.discard(id(module))
        row_gate = gate.to(output.device, output.dtype).view(-1, *([1] * (output.dim() - 1)))
        return output * row_gate + frozen * (1 - row_gate)

    handles = [module.register_forward_hook(hook, with_kwargs=True) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ------------------------------------------------------------------------------------------------- data


def batch_indices(n_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The example indices of a step's global batch: consecutive slices of a stream of shuffled epochs, each
    epoch's order drawn from (seed, epoch). A pure function of the step, so resuming needs no sampler state."""
    start, stop = step * batch_size, (step + 1) * batch_size
    orders: dict[int, list[int]] = {}
    indices = []
    for position in range(start, stop):
        epoch = position // n_examples
        if epoch not in orders:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            orders[epoch] = torch.randperm(n_examples, generator=generator).tolist()
        indices.append(orders[epoch][position % n_examples])
    return indices


def shard(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    return list(items[rank::world])


def forward_logits(model: nn.Module, batch: Batch) -> Tensor:
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


# -------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def row_losses(model: nn.Module, rows: Sequence[TokenizedExample], pad_id: int, batch_size: int = 64,
               row_loss: RowLoss = completion_loss, device: torch.device | str = "cpu") -> Float[Tensor, "row"]:
    """Per-row loss of every row, in the rows' order. Rows are batched by length (less padding to compute);
    right padding does not change a row's loss."""
    was_training = model.training
    model.eval()
    losses = torch.zeros(len(rows))
    for chosen in batches_by_length(rows, batch_size):
        batch = collate([rows[i] for i in chosen], pad_id).to(device)
        losses[chosen] = row_loss(model, batch, forward_logits(model, batch)).float().cpu()
    model.train(was_training)
    return losses


def mean_loss(model: nn.Module, rows: Sequence[TokenizedExample], pad_id: int, batch_size: int = 64,
              row_loss: RowLoss = completion_loss, device: torch.device | str = "cpu") -> float:
    """Mean per-row loss; under torchrun each rank scores its share and the sums are added up."""
    mine = shard(rows, *distributed.group_rank_and_size())
    losses = row_losses(model, mine, pad_id, batch_size, row_loss, device)
    totals = distributed.all_reduce_sum(torch.tensor([losses.double().sum().item(), float(len(losses))],
                                                     dtype=torch.float64, device=device))
    return (totals[0] / totals[1].clamp(min=1)).item()


# ------------------------------------------------------------------------------------------ checkpoints

CHECKPOINT = "checkpoint"
STATE_FILE = "trainer_state.json"


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, model: nn.Module, optimizers: Optimizers, steps_done: int,
                    fingerprint: str) -> None:
    """Written to a sibling directory and swapped in, so an interrupted write keeps the previous checkpoint."""
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_tensors(staging / "trainable.safetensors", {n: p.detach() for n, p in trainable(model).items()})
    torch.save({"optimizers": optimizers.state_dict(), "rng": torch.get_rng_state()}, staging / "optimizer.pt")
    write_json(staging / STATE_FILE, {"steps_done": steps_done, "fingerprint": fingerprint})
    previous = folder.with_name(folder.name + ".old")
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        folder.rename(previous)
    staging.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)


def checkpoint_steps(folder: Path | None, fingerprint: str) -> int | None:
    """Steps done by a resumable checkpoint of this config in `folder`, else None; one of another config is an
    error rather than something silently overwritten or continued."""
    if folder is None or not (folder / STATE_FILE).is_file():
        return None
    state = json.loads((folder / STATE_FILE).read_text())
    if state.get("fingerprint") != fingerprint:
        raise UsageError(f"{folder} holds a checkpoint of a different config; use another --out, or delete it to "
                         "start over")
    return int(state["steps_done"])


def load_checkpoint(folder: Path, model: nn.Module, optimizers: Optimizers) -> None:
    params = trainable(model)
    saved = load_tensors(folder / "trainable.safetensors")
    if set(saved) != set(params):
        raise UsageError(f"{folder}: the checkpoint's trainable weights do not match this model's")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    state = torch.load(folder / "optimizer.pt", weights_only=True)
    optimizers.load_state_dict(state["optimizers"])
    torch.set_rng_state(state["rng"])


# -------------------------------------------------------------------------------------------------- loop


@dataclass
class TrainResult:
    steps: int
    resumed_from: int  # 0 when the run started fresh
    final_train_loss: float
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_second: float = math.nan
    train_seconds: float = 0.0


class Optimizers:
    """One AdamW and one schedule per named parameter group (a single group "all" unless a study splits them)."""

    def __init__(self, model: nn.Module, settings: TrainSettings, param_groups: ParamGroups | None = None):
        params = trainable(model)
        if not params:
            raise UsageError("the model has no trainable parameters")
        groups = param_groups(model) if param_groups else {"all": list(params.values())}
        grouped = [id(p) for group in groups.values() for p in group]
        assert sorted(grouped) == sorted(id(p) for p in params.values()), \
            "param_groups must hold every trainable parameter exactly once"
        self.optimizers = {name: torch.optim.AdamW(group, lr=settings.lr, weight_decay=settings.weight_decay,
                                                   betas=settings.betas) for name, group in groups.items()}
        self.schedulers = {name: lr_scheduler(opt, settings.lr_schedule, settings.steps)
                           for name, opt in self.optimizers.items()}

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def step(self, active: set[str] | None = None) -> None:
        """Step the named optimisers (all by default), then advance every schedule."""
        for name, optimizer in self.optimizers.items():
            if active is None or name in active:
                optimizer.step()
        with warnings.catch_warnings():  # a group that has not stepped yet makes torch warn about the order
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            for scheduler in self.schedulers.values():
                scheduler.step()

    def lr(self) -> float:
        return next(iter(self.schedulers.values())).get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        return {name: {"optimizer": self.optimizers[name].state_dict(), "scheduler": self.schedulers[name].state_dict()}
                for name in self.optimizers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, saved in state.items():
            self.optimizers[name].load_state_dict(saved["optimizer"])
            self.schedulers[name].load_state_dict(saved["scheduler"])


def train(model: nn.Module, train_rows: Sequence[TokenizedExample], settings: TrainSettings, *, pad_id: int,
          seed: int, device: torch.device, eval_rows: Sequence[TokenizedExample] = (), hooks: Hooks | None = None,
          run: Run | None = None, checkpoint_dir: Path | None = None, fingerprint: str = "",
          stop_after: int | None = None) -> TrainResult:
    """Train the model's trainable parameters in place; `stop_after` ends early after that many steps, as an
    interruption would (for tests of resuming)."""
    hooks = hooks or Hooks()
    settings = settings.for_rows(len(train_rows))
    rank, world = distributed.group_rank_and_size()
    if settings.batch_size < world * settings.grad_accum_steps:
        raise UsageError(f"train.batch_size ({settings.batch_size}) must be at least processes x grad_accum_steps "
                         f"({world} x {settings.grad_accum_steps})")
    if not train_rows:
        raise UsageError("no training examples")
    optimizers = Optimizers(model, settings, hooks.param_groups)
    start = checkpoint_steps(checkpoint_dir, fingerprint) or 0
    if start:
        load_checkpoint(checkpoint_dir, model, optimizers)  # type: ignore[arg-type]
        if run:
            run.log(f"resuming from the checkpoint after step {start} in {checkpoint_dir}")
            run.rewind_metrics(start)
    wrapped = model
    if distributed.is_distributed():
        device_ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    model.train()
    result = TrainResult(steps=settings.steps, resumed_from=start, final_train_loss=math.nan)
    n_tokens, t0 = 0, time.perf_counter()
    with (run.progress(settings.steps - start, "training") if run else nullcontext()) as bar:
        for step in range(start, settings.steps):
            global_batch = batch_indices(len(train_rows), settings.batch_size, step, seed)
            active = hooks.groups_to_step([train_rows[i] for i in global_batch]) if hooks.groups_to_step else None
            rows = [train_rows[i] for i in shard(global_batch, rank, world)]
            loss, step_tokens, grad_norm = train_step(wrapped, model, rows, settings, hooks, pad_id, device)
            optimizers.step(active)
            n_tokens += step_tokens
            result.final_train_loss = loss
            done = step + 1
            if run and (step % settings.log_every == 0 or done == settings.steps):
                record = {"train/loss": loss, "lr": optimizers.lr()}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                run.log_metrics(step, record)
            if eval_rows and settings.eval_every and done % settings.eval_every == 0 and done < settings.steps:
                held_out = mean_loss(model, eval_rows, pad_id, settings.eval_batch_size, hooks.row_loss, device)
                result.eval_history.append((done, held_out))
                if run:
                    run.log_metrics(step, {"eval/held_out_loss": held_out})
            if checkpoint_dir and settings.checkpoint_every and done % settings.checkpoint_every == 0 \
                    and done < settings.steps:
                if distributed.is_writer():
                    save_checkpoint(checkpoint_dir, model, optimizers, done, fingerprint)
                distributed.barrier()
            if hooks.after_step is not None:
                hooks.after_step(done)
            if bar is not None:
                bar.update(status=f"loss {loss:.3f}")
            if stop_after is not None and done >= stop_after:
                break
    result.train_seconds = time.perf_counter() - t0
    result.tokens_per_second = world * n_tokens / max(result.train_seconds, 1e-9)
    model.eval()
    return result


def train_step(wrapped: nn.Module, model: nn.Module, rows: Sequence[TokenizedExample], settings: TrainSettings,
               hooks: Hooks, pad_id: int, device: torch.device
               ) -> tuple[float, int, float | None]:
    """Forward and backward over this rank's rows in micro-batches, then clip (the caller steps the optimisers).

    Returns (mean row loss of the global batch, real tokens this rank processed, gradient norm before clipping)."""
    _, world = distributed.group_rank_and_size()
    micro_batches = _split(rows, settings.grad_accum_steps)
    for param in trainable(model).values():
        param.grad = None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_tokens = 0
    for i, chunk in enumerate(micro_batches):
        batch = collate(chunk, pad_id).to(device)
        n_tokens += int(batch.attention_mask.sum())
        last = i == len(micro_batches) - 1
        sync = nullcontext() if last or not hasattr(wrapped, "no_sync") else wrapped.no_sync()
        around = hooks.around_batch(model, batch) if hooks.around_batch else nullcontext()
        with sync, around:
            logits = forward_logits(wrapped, batch)
            per_row = hooks.row_loss(model, batch, logits)
            if hooks.extra_loss is not None:
                per_row = per_row + hooks.extra_loss(model, batch, logits)
            # DDP averages gradients over processes, so each one's share is scaled up by the world size
            (per_row.sum() * world / settings.batch_size).backward()
        loss_sum += per_row.detach().double().sum()
    grad_norm = None
    if settings.max_grad_norm:
        grad_norm = torch.nn.utils.clip_grad_norm_(list(trainable(model).values()), settings.max_grad_norm).item()
    total = distributed.all_reduce_sum(loss_sum)
    return (total / settings.batch_size).item(), n_tokens, grad_norm


def _split(rows: Sequence[TokenizedExample], n_chunks: int) -> list[list[TokenizedExample]]:
    """Exactly n_chunks non-empty chunks (sizes differ by at most one): under DDP every process must run the
    same number of backward passes."""
    assert len(rows) >= n_chunks, f"{len(rows)} rows cannot fill {n_chunks} micro-batches"
    bounds = [round(i * len(rows) / n_chunks) for i in range(n_chunks + 1)]
    return [list(rows[a:b]) for a, b in zip(bounds, bounds[1:])]


__all__ = ["DTYPES", "Hooks", "TrainResult", "TrainSettings", "batch_indices", "completion_loss", "mean_loss",
           "row_gradient_scale", "row_losses", "train"]
