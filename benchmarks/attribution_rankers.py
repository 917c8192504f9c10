"""Documents scored per second by each attribution ranker on the same checkpoint pair and queries.

    uv run python benchmarks/attribution_rankers.py --pair DIR [--methods bm25 tfidf ...] [--repeats 3]

DIR is a `hops-train` run directory (default: the default pair, trained on first use and cached). Each method
ranks every document of the pair's corpus for the 100 default queries (the 10 wrappers x inputs 1..10); its time
counts everything the method does, its share of the activations and gradients included: every method starts
from a fresh `AttributionData` (nothing cached from another method), the checkpoints loaded before the clock
starts. Methods run one after the other, `repeats` times each (the cheap ones; kronfluence, bergson,
attr_change_ig and causal_patching once unless --repeats-slow says more), and the median is printed with
documents per second (documents / seconds) and the time relative to bm25. The load average is printed before
and after: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from tunelens.attribution.attribute import HopsAttributeConfig, resolve_pair
from tunelens.attribution.corpus import functions_of, queries, read_corpus
from tunelens.attribution.rankers import METHODS, MethodOptions, score_method
from tunelens.attribution.rankers.base import AttributionData
from tunelens.runs import load_average

SLOW = {"kronfluence", "bergson", "attr_change_ig", "causal_patching"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", type=Path, default=None, help="hops-train run directory (default: cached pair)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each cheap method (median reported)")
    parser.add_argument("--repeats-slow", type=int, default=1, help="runs of the slow methods")
    args = parser.parse_args()

    source = resolve_pair(HopsAttributeConfig(pair=str(args.pair) if args.pair else None))
    documents = read_corpus(source.corpus)
    functions = functions_of(documents)
    asked = queries(functions, "hops", range(1, 11))
    options = MethodOptions()
    print(f"pair {source.new}: {len(documents)} documents x {len(asked)} queries; load average {load_average()}")
    rows = []
    for method in args.methods:
        seconds = []
        for repeat in range(args.repeats_slow if method in SLOW else args.repeats):
            data = AttributionData(documents, asked, functions, source.old, source.new, log=lambda message: None,
                                   work_dir=Path("/tmp") / f"tunelens-bench-{method}-{repeat}")
            _ = data.old  # loading both checkpoints is not the method's time
            start = time.perf_counter()
            score_method(method, data, options)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        rows.append((method, median, len(documents) / median, len(seconds)))
        print(f"  {method:16s} {median:9.2f} s  {len(documents) / median:10.1f} documents/s  ({len(seconds)} runs)",
              flush=True)
    base = next((r[1] for r in rows if r[0] == "bm25"), None)
    print(f"\nload average after: {load_average()}\n")
    print("| method | seconds (median) | documents / s | x bm25's time | runs |\n|---|---|---|---|---|")
    for method, median, rate, runs in rows:
        ratio = f"{median / base:.1f}" if base else ""
        print(f"| {method} | {median:.2f} | {rate:.1f} | {ratio} | {runs} |")


if __name__ == "__main__":
    main()
