"""Training throughput (examples per second) of gradient routing: batched, one example per step, and plain LoRA.

    uv run python benchmarks/routing_throughput.py --repeats 3 --steps 8

All three train the `caps` base model (`tiny-stories-mixedcase`) through the shared loop (`tunelens.lm.trainer.
train`) on the same caps rows (the `caps` defaults' data: 50 % uppercased, half of those labeled bad, 10 % of clean
ones labeled good; rows cut at 128 tokens):

1. batched routing: dual LoRA adapters (rank 8 each, the 7 projections of the last half of the layers), the
   routing hooks, `--batch-size` rows per optimiser step;
2. one example per step: the same model and hooks with batch size 1 (the original scheme);
3. plain LoRA: one peft LoRA adapter (rank 16 = both branches' ranks together, same modules), the same batch
   size as case 1.

They run in alternating blocks so that drift of the machine hits all of them; the medians over `repeats` blocks
and the ratios are printed with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from tunelens.runs import load_average


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="Optimiser steps per block (batched and LoRA).")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    from tunelens.lm.adapters import LoraSettings, add_lora
    from tunelens.lm.loading import load_model, load_tokenizer, resolve_name
    from tunelens.lm.trainer import Hooks, TrainSettings, train
    from tunelens.routing import adapters
    from tunelens.routing.train import CapsConfig, load_stories, routing_hooks, tokenize_stories, training_set

    config = CapsConfig(n_train_stories=512, n_eval_stories=1)
    source = resolve_name(config.model)
    tokenizer = load_tokenizer(source, padding_side="right")
    stories, _ = load_stories(config)
    examples, routes = training_set(stories, config)
    rows = tokenize_stories(tokenizer, examples, config.max_len)
    device = torch.device("cpu")

    def routed_model():
        model = load_model(source)
        settings = adapters.DualAdapterSettings(kind="lora", good_dim=8, bad_dim=8, alpha=16.0)
        return adapters.add_dual_adapters(model, settings)

    def lora_model():
        return add_lora(load_model(source), LoraSettings(r=16, alpha=16.0, layers=[2, 3]))

    def block(make_model: Callable, batch_size: int, steps: int, hooks: Hooks | None) -> float:
        model = make_model()
        settings = TrainSettings(steps=steps, batch_size=batch_size, lr=1e-3, checkpoint_every=0, log_every=1000)
        start = time.perf_counter()
        train(model, rows, settings, pad_id=tokenizer.pad_token_id, seed=0, device=device, hooks=hooks)
        return steps * batch_size / (time.perf_counter() - start)

    hooks = routing_hooks(routes, ablate_good=config.labeled_bad_ablates_good)
    cases = {
        "batched routing": lambda: block(routed_model, args.batch_size, args.steps, hooks),
        "one example per step": lambda: block(routed_model, 1, args.steps * 4, hooks),
        "plain peft LoRA": lambda: block(lora_model, args.batch_size, args.steps, None),
    }
    print(f"load average before: {load_average()}")
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, case in cases.items():
            results[name].append(case())
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"{name:>22}: {value:8.1f} examples/s (blocks: {', '.join(f'{v:.1f}' for v in results[name])})")
    print(f"batched / one-per-step: {medians['batched routing'] / medians['one example per step']:.1f}x; "
          f"plain LoRA / batched routing (cost ratio): {medians['plain peft LoRA'] / medians['batched routing']:.2f}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
