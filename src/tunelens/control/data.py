"""The SAD-derived data shipped with the package, decoded from gzip at load time (never stored in plain text)."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "output_control"


def read_gzip_json(path: Path) -> Any:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def write_gzip_json(path: Path, payload: Any) -> None:
    """Compressed JSON for anything holding SAD-derived text (words, prompts, per-sample outputs)."""
    from tunelens.runs import atomic_write_bytes, to_jsonable

    text = json.dumps(to_jsonable(payload), ensure_ascii=False, indent=1)
    atomic_write_bytes(path, gzip.compress(text.encode(), mtime=0))


@cache
def sad_words() -> tuple[str, ...]:
    """The 3,183 words of SAD's output-control list, in file order (the order the seeded draws index into)."""
    return tuple(read_gzip_json(DATA_DIR / "words.json.gz")["words"])


@cache
def sad_prompts() -> dict[str, Any]:
    """SAD's templates, prefill and few-shot messages (see the README beside the data)."""
    return read_gzip_json(DATA_DIR / "sad_prompts.json.gz")
