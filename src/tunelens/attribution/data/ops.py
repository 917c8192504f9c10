"""The original's corpus utilities over lists of JSON records (`create_alternating_dataset.py`,
`combine_datasets.py`, `separate_datasets.py`, `normal_token_test.py`), plus reading and atomic writing.

Records are plain dicts and are never modified in place. Writing serialises every record with `json.dumps`
(`ensure_ascii=False` by default, as the original's derived files `20hops_depth0/1.jsonl` and
`20hops_normal_toks.jsonl` are; pass `ensure_ascii=True` for the escaped form of `20hops.jsonl` itself) and replaces
the file atomically: an error leaves no partial output.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from tunelens.attribution.data.filters import text_key
from tunelens.config import UsageError

RELEASED_PATTERN = "GJKLMNOPQR GJKLMNOPQR FIHSTUVWXY"  # the released 20hops.jsonl's 30-document cycle
BRACKETED = re.compile(r"<([A-Z]{1,3})>")

Record = dict[str, Any]


def read_records(path: str | Path) -> list[Record]:
    from tunelens.lm.examples import read_jsonl

    records = []
    for where, record in read_jsonl(path, "documents"):
        if not isinstance(record, dict):
            raise UsageError(f"{where}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def dumps(records: list[Record], ensure_ascii: bool = False) -> str:
    return "".join(json.dumps(record, ensure_ascii=ensure_ascii) + "\n" for record in records)


def write_records(path: str | Path, records: list[Record], ensure_ascii: bool = False) -> Path:
    from tunelens.runs import atomic_write_text

    atomic_write_text(path, dumps(records, ensure_ascii))
    return Path(path)


def _func(record: Record, i: int) -> str:
    func = record.get("func")
    if not isinstance(func, str):
        raise UsageError(f"document {i}: 'func' is missing or not a string")
    return func


def letter_token(letter: str) -> str:
    """A pattern letter's function token: G -> <GN>."""
    return f"<{letter}N>"


def order(records: list[Record], pattern: str | None = "released", seed: int = 0) -> list[Record]:
    """The records in curriculum order.

    `pattern` is a repeating cycle of letters (whitespace ignored), a letter X standing for the token `<XN>`;
    "released" (the default) is the released corpus's cycle, G J K L M N O P Q R twice then F I H S T U V W X Y.
    Each function's documents are taken in their input order. When a function runs out, the cycle goes on without
    it until every function in the pattern is exhausted; documents of functions the pattern does not name follow at
    the end, in input order. A letter no document's function matches is an error. `None` is the original's
    default pattern: each base, then the wrappers that target it, in order of first appearance. "shuffle" is a
    random permutation by `seed`.
    """
    if pattern == "shuffle":
        shuffled = list(records)
        random.Random(seed).shuffle(shuffled)
        return shuffled
    queues: dict[str, list[Record]] = {}
    for i, record in enumerate(records):
        queues.setdefault(_func(record, i), []).append(record)
    if pattern is None:
        cycle = default_cycle(records)
    else:
        letters = [c for c in (RELEASED_PATTERN if pattern == "released" else pattern) if not c.isspace()]
        if not letters:
            raise UsageError("the order pattern is empty")
        unknown = [c for c in letters if letter_token(c) not in queues]
        if unknown:
            raise UsageError(f"pattern letter {unknown[0]!r}: no document has the function {letter_token(unknown[0])}"
                             f" (the corpus has {', '.join(sorted(queues))})")
        cycle = [letter_token(c) for c in letters]
    positions = dict.fromkeys(cycle, 0)
    out: list[Record] = []
    while True:
        progressed = False
        for token in cycle:
            if positions[token] < len(queues[token]):
                out.append(queues[token][positions[token]])
                positions[token] += 1
                progressed = True
        if not progressed:
            break
    named = set(cycle)
    return out + [r for i, r in enumerate(records) if _func(r, i) not in named]


def default_cycle(records: list[Record]) -> list[str]:
    """Each base (hop depth 0) in order of first appearance followed by the functions that wrap it (by `wraps`, else
    by the audit's most-named rule)."""
    from tunelens.attribution.data.audit import functions_of, load

    functions = functions_of(load(records))
    cycle: list[str] = []

    def add(token: str) -> None:
        cycle.append(token)
        for f in functions.values():
            if f.target == token and f.token not in cycle:
                add(f.token)

    for f in functions.values():
        if f.depth == 0:
            add(f.token)
    return cycle + [token for token in functions if token not in cycle]


def combine(paths: list[str | Path], shuffle: bool = False, seed: int = 0, dedup: bool = False) -> list[Record]:
    """The records of several files, concatenated; `dedup` keeps the first of every text (md5 of its bytes, as the
    original), `shuffle` permutes the result by `seed`."""
    records = [record for path in paths for record in read_records(path)]
    if dedup:
        seen: set[str] = set()
        kept = []
        for i, record in enumerate(records):
            if not isinstance(record.get("text"), str):
                raise UsageError(f"document {i}: 'text' is missing or not a string")
            key = text_key(record["text"])
            if key not in seen:
                seen.add(key)
                kept.append(record)
        records = kept
    if shuffle:
        random.Random(seed).shuffle(records)
    return records


def split_by_depth(records: list[Record]) -> dict[int, list[Record]]:
    """Depth -> its records in input order, depths ascending."""
    out: dict[int, list[Record]] = {}
    for i, record in enumerate(records):
        depth = record.get("hop_depth")
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise UsageError(f"document {i}: 'hop_depth' must be an integer, got {depth!r}")
        out.setdefault(depth, []).append(record)
    return dict(sorted(out.items()))


def write_split(records: list[Record], out_dir: str | Path, stem: str, ensure_ascii: bool = False) -> list[Path]:
    """One file per depth, `<stem>_depth<d>.jsonl` (the original's names). Every file's text is built before the
    first is written, and each is replaced atomically."""
    texts = {Path(out_dir) / f"{stem}_depth{depth}.jsonl": dumps(group, ensure_ascii)
             for depth, group in split_by_depth(records).items()}
    from tunelens.runs import atomic_write_text

    for path, text in texts.items():
        atomic_write_text(path, text)
    return list(texts)


def normalise_tokens(records: list[Record], fields: tuple[str, ...] = ("text",)) -> list[Record]:
    """Angle brackets removed from the function tokens (`<GN>` -> `GN`) in the given string fields. The default,
    `text` only, is what the original's `20hops_normal_toks.jsonl` did: its `func` keeps the brackets. Pass
    `("text", "func", "wraps")` to normalise those fields too."""
    out = []
    for record in records:
        record = dict(record)
        for key in fields:
            if isinstance(record.get(key), str):
                record[key] = BRACKETED.sub(r"\1", record[key])
        out.append(record)
    return out


__all__ = ["RELEASED_PATTERN", "combine", "default_cycle", "dumps", "normalise_tokens", "order", "read_records",
           "split_by_depth", "write_records", "write_split"]
