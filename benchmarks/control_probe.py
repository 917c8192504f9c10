"""Prompts per second of the output-control probe: batched against one prompt at a time.

    uv run python benchmarks/control_probe.py --repeats 3 --num-examples 10

The prompts are the `output-control` default evaluation samples of the tiny story model (pretrained on first use):
num_examples items per case x 10 grid points x 3 cases. Four ways to read every prompt's next-token distribution:

1. batched: `tunelens.control.probe.probe` with `--batch-size` prompts per forward pass, each shared prefix computed
   once (`tunelens.lm.prefix`; left-padded, logits at the final position only, whitespace variants merged with one
   index_add);
2. batched, whole prompts: the same without prefix sharing (prompts grouped by length);
3. one at a time: the same function with batch_size=1 (nothing shared);
4. per prompt as the original study read it: a forward pass over one prompt with every position's logits, the
   softmax at the last position, the top 50 ids decoded one by one and merged by stripped text.

The four run in alternating blocks so that drift of the machine hits all of them; the medians over `repeats`
blocks and the ratios are printed, with the load average before and after. The readouts of 1, 2 and 3 are checked to
agree.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from tunelens.control.evaluate import draw_eval_samples
from tunelens.control.probe import probe, vocab_index
from tunelens.control.prompts import encode_samples, prompt_style
from tunelens.lm.loading import load_model, load_tokenizer
from tunelens.lm.prefix import plan_groups, planned_positions
from tunelens.lm.pretrain import tiny_story_model
from tunelens.runs import load_average


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@torch.no_grad()
def original_style(model, tokenizer, prompts: list[list[int]], top_k: int = 50) -> list[dict[str, float]]:
    readouts = []
    for ids in prompts:
        logits = model(input_ids=torch.tensor([ids])).logits  # every position's logits
        probs = logits[0, -1].float().softmax(-1)
        values, indices = probs.topk(top_k)
        merged: dict[str, float] = {}
        for value, index in zip(values.tolist(), indices.tolist()):
            key = tokenizer.decode([index]).strip()
            merged[key] = merged.get(key, 0.0) + value
        readouts.append(merged)
    return readouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-examples", type=int, default=10, help="items per case (10 prompts each)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"/proc/loadavg before: {load_average()}")
    folder = tiny_story_model()
    tokenizer = load_tokenizer(folder, padding_side="right")
    model = load_model(folder)
    style = prompt_style("tunelens")
    samples = draw_eval_samples("default", [tokenizer], style.prefill, ["given_words", "random_words",
                                "icl_random_words"], args.num_examples, 0.5, 0, log=lambda m: None)
    prompts = encode_samples(tokenizer, samples, style, chat="auto")
    index = vocab_index(tokenizer, model.config.vocab_size)
    lengths = [len(p) for p in prompts]
    print(f"{len(prompts)} prompts of {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), "
          f"tiny story model, threads={torch.get_num_threads()}, batch {args.batch_size}")
    groups = plan_groups(prompts, max_group=args.batch_size)
    print(f"prefix plan: {len(groups)} groups, {planned_positions(prompts, groups)} token positions instead of "
          f"{sum(lengths)}")

    def batched():
        return probe(model, prompts, tokenizer.pad_token_id, index, top_k=20, batch_size=args.batch_size)

    def whole():
        return probe(model, prompts, tokenizer.pad_token_id, index, top_k=20, batch_size=args.batch_size,
                     share_prefixes=False)

    def single():
        return probe(model, prompts, tokenizer.pad_token_id, index, top_k=20, batch_size=1)

    batched()  # warm-up
    rates: dict[str, list[float]] = {"batched": [], "whole prompts": [], "one at a time": [], "original style": []}
    for _ in range(args.repeats):
        seconds, fast = timed(batched)
        rates["batched"].append(len(prompts) / seconds)
        seconds, plain = timed(whole)
        rates["whole prompts"].append(len(prompts) / seconds)
        seconds, slow = timed(single)
        rates["one at a time"].append(len(prompts) / seconds)
        seconds, _ = timed(lambda: original_style(model, tokenizer, prompts))
        rates["original style"].append(len(prompts) / seconds)
    difference = max((fast.top_probs - other.top_probs).abs().max().item()  # type: ignore[attr-defined]
                     for other in (slow, plain))  # type: ignore[attr-defined]
    for name, values in rates.items():
        print(f"  {name:15s} median {statistics.median(values):8.1f} prompts/s  (min {min(values):.1f}, "
              f"max {max(values):.1f})")
    base = statistics.median(rates["batched"])
    print(f"  batched / one at a time: {base / statistics.median(rates['one at a time']):.1f}x")
    print(f"  batched / whole prompts: {base / statistics.median(rates['whole prompts']):.1f}x")
    print(f"  whole prompts / one at a time: "
          f"{statistics.median(rates['whole prompts']) / statistics.median(rates['one at a time']):.1f}x")
    print(f"  batched / original style: {base / statistics.median(rates['original style']):.1f}x")
    print(f"  largest difference between the readouts of 1-3: {difference:.2e}")
    print(f"/proc/loadavg after: {load_average()}")


if __name__ == "__main__":
    main()
