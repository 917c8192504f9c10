"""Speed of the MBPP evaluation: solutions sampled per second and programs judged per second.

    uv run python benchmarks/mbpp_eval.py --repeats 3 --problems 64

Sampling: the `mbpp` defaults' sampler (the KV-cached batched sampler, 96 new tokens, temperature 0.5, batches of
32) on the tiny code model with fresh (zero-initialised, so the base model's) dual adapters, `samples_per_problem`
2, on the first `--problems` evaluation problems. Judging: the MBPP reference solutions of the same problems run in
the sandbox with their first test and with all tests (two programs each), with 2 workers, and the same number of
programs as one worker. Medians over `repeats` blocks, with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from tunelens.runs import load_average


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--problems", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    from tunelens.lm.loading import load_model, load_tokenizer, resolve_name
    from tunelens.routing import adapters
    from tunelens.routing.mbpp import MbppConfig, load_problems, sample_solutions
    from tunelens.routing.mbpp_check import check_solutions
    from tunelens.sandbox import Limits, Sandbox

    config = MbppConfig()
    source = resolve_name(config.model)
    tokenizer = load_tokenizer(source, padding_side="right")
    model = adapters.add_dual_adapters(load_model(source), config.adapter).eval()
    _, problems = load_problems(config)
    problems = problems[: args.problems]

    def sampling() -> float:
        start = time.perf_counter()
        completions = sample_solutions(model, tokenizer, problems, config.eval, config.max_len, seed=0)
        return len(completions) / (time.perf_counter() - start)

    def judging(workers: int) -> float:
        sandbox = Sandbox(Limits(timeout_s=config.eval.timeout_s), workers=workers)
        start = time.perf_counter()
        check_solutions(problems, sandbox)
        return 2 * len(problems) / (time.perf_counter() - start)

    cases = {"samples/s": sampling, "programs/s (2 workers)": lambda: judging(2),
             "programs/s (1 worker)": lambda: judging(1)}
    print(f"load average before: {load_average()}")
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, case in cases.items():
            results[name].append(case())
    print(f"{len(problems)} problems, {config.eval.samples_per_problem} samples each, "
          f"{config.eval.max_new_tokens} new tokens at most, batches of {config.eval.batch_size}")
    for name, values in results.items():
        print(f"{name:<24} median {statistics.median(values):8.1f}   runs {', '.join(f'{v:.1f}' for v in values)}")
    two, one = (statistics.median(results[k]) for k in ("programs/s (2 workers)", "programs/s (1 worker)"))
    print(f"2 workers / 1 worker: {two / one:.2f}x")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
