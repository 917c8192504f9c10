"""Time one SPD optimisation step (forward of every loss term, backward, AdamW) for registered experiments.

    uv run python benchmarks/spd_step.py tms_5-2 resid_mlp1 --repeats 7 --steps 20 --threads 1
    uv run python benchmarks/spd_step.py lm_mlp --compare-full-passes --repeats 3 --steps 5 --threads 2

Prints the median (and min/max) seconds per step over `repeats` blocks of `steps` steps each. Targets come from
the cache (trained on first use), so the first call of a fresh machine also trains them.

For tms_5-2 and resid_mlp1 it also prints the public reference implementation's step as measured on this kind of
machine (`shared/research/spd_peer_measured.md`: goodfire-ai/spd at 3f0bb61, fp32) and the ratio per training
sample, ours over theirs, since the two default to different batch sizes. Compare at the reference's thread count.

`--compare-full-passes` also times each step with masked passes that run every block of the target again (what
they did before they skipped the blocks ahead of the first decomposed layer), alternating the two by repeat.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from tunelens.registry import get_experiment
from tunelens.runs import seed_everything
from tunelens.spd.configs import SpdConfig
from tunelens.spd.losses import OUTPUT_LOSSES
from tunelens.spd.targets import Target, build_target
from tunelens.spd.train import build_component_model, make_optimizer, optimizer_step

# experiment -> (seconds per step, batch size, threads, what was measured)
PEER = {
    "tms_5-2": (0.030, 4096, 2, "reference tms_5-2, 10k x 4096, fp32, 2 threads"),
    "resid_mlp1": (0.185, 2048, 1, "reference resid_mlp1, 1 thread"),
}


def load(name: str, overrides: list[str]) -> tuple[SpdConfig, Target]:
    config = get_experiment(name).load_config(assignments=overrides)
    seed_everything(config.seed)
    return config, build_target(config.target, torch.device("cpu"), lambda message: None)


def time_steps(config: SpdConfig, target: Target, repeats: int, steps: int, full_passes: bool = False
               ) -> list[float]:
    seed_everything(config.seed)
    if full_passes:
        target = dataclasses.replace(target, blocks=None)
    model = build_component_model(config, target)
    optimizer = make_optimizer(model, config)
    output_loss = OUTPUT_LOSSES[target.output_loss]

    def step() -> None:  # exactly the training loop's step, halfway through training, at the peak lr
        optimizer_step(model, target, config, optimizer, output_loss, 0.5)

    for _ in range(3):  # warm-up: allocator, lazy init
        step()
    per_step = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        per_step.append((time.perf_counter() - start) / steps)
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--compare-full-passes", action="store_true",
                        help="also time masked passes that re-run the blocks before the first decomposed layer")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.names:
        config, target = load(name, args.overrides)
        if args.compare_full_passes:  # alternate one repeat each, so both sides see the same machine state
            skip, full = [], []
            for _ in range(args.repeats):
                skip += time_steps(config, target, 1, args.steps)
                full += time_steps(config, target, 1, args.steps, full_passes=True)
            print(f"{name}\tfull passes\tmedian {statistics.median(full) * 1e3:.2f} ms/step\t"
                  f"({', '.join(f'{t * 1e3:.1f}' for t in full)})")
            times = skip
        else:
            times = time_steps(config, target, args.repeats, args.steps)
        median = statistics.median(times)
        print(f"{name}\tthreads={torch.get_num_threads()}\tmedian {median * 1e3:.2f} ms/step"
              f"\tmin {min(times) * 1e3:.2f}\tmax {max(times) * 1e3:.2f}\t({args.repeats}x{args.steps} steps)")
        if name in PEER:
            seconds, batch, threads, what = PEER[name]
            ours_batch = config.optim.batch_size
            ratio = (median / ours_batch) / (seconds / batch)
            print(f"{name}\tpeer\t{seconds * 1e3:.2f} ms/step at batch {batch}, {threads} thread(s) ({what})\t"
                  f"per sample: ours {median / ours_batch * 1e6:.2f} us, peer {seconds / batch * 1e6:.2f} us, "
                  f"ratio {ratio:.2f}{'' if threads == torch.get_num_threads() else ' (thread counts differ)'}")


if __name__ == "__main__":
    main()
