"""Learning-rate schedules as `torch.optim.lr_scheduler` objects, built from a config's `Schedule`.

The shape is a pure function of the step (`schedule_value`), so it is tested by hand and shared by every loop:
linear warm-up from 0, then constant, linear or cosine decay to `final_frac` of the peak.
"""

from __future__ import annotations

import math

import torch

from tunelens.config import Schedule


def schedule_value(schedule: Schedule, peak: float, step: int, n_steps: int) -> float:
    """Value at `step` of `n_steps` (step counts from 0; the last step is n_steps - 1)."""
    n_warmup = int(round(schedule.warmup_frac * n_steps))
    if step < n_warmup:
        return peak * (step + 1) / n_warmup
    if schedule.kind == "constant":
        return peak
    n_decay = max(n_steps - n_warmup - 1, 1)
    progress = min((step - n_warmup) / n_decay, 1.0)
    final = peak * schedule.final_frac
    if schedule.kind == "linear":
        return peak + (final - peak) * progress
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, n_steps: int
                 ) -> torch.optim.lr_scheduler.LambdaLR:
    """Scales each parameter group's own lr (its peak); call `.step()` after each optimiser step. Its state_dict
    holds the step count, so a resumed run continues the schedule where it stopped."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_value(schedule, 1.0, min(step, n_steps - 1), n_steps))
