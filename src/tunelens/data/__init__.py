"""Data shipped with tunelens, each file with its source and licence in a README beside it."""

from __future__ import annotations

from pathlib import Path

MBPP = Path(__file__).parent / "mbpp" / "mbpp.jsonl"  # MBPP "full", 974 problems (CC BY 4.0)
