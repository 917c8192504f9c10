"""Data shipped with tunelens, each file with its source and licence in a README beside it."""

from __future__ import annotations

from pathlib import Path

MBPP = Path(__file__).parent / "mbpp" / "mbpp.jsonl"  # MBPP "full", 974 problems (CC BY 4.0)
MBPP_SANITIZED_TEST_IDS = Path(__file__).parent / "mbpp" / "sanitized_test_ids.json"  # the 257 evaluation problems
HOPS = Path(__file__).parent / "hops"
HOPS_CORPUS = HOPS / "20hops.jsonl"  # 3000 documents, the released hops checkpoints' corpus (declared MIT)
HOPS_CORPUS_6K = HOPS / "20hops_6k.jsonl"  # 6000 documents (the first 3000 are HOPS_CORPUS)
HOPS_SEEDS = HOPS / "seeds.jsonl"  # the 100 hand-written seed documents
