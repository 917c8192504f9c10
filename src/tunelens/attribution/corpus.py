"""The hops benchmark's documents, function pairs, queries and relevance.

A corpus is a JSONL file with one document per line (`text`, `func`, `role`, `hop_depth`, `constant`; other fields
are kept and written back out with the rankings). The document id is the position in the file: uids repeat.

Base functions (role `constant`, depth 0) return a constant; a wrapper (role `identity`, depth 1) returns whatever
its base returns, and its documents name the base but never the value. Pairs are read from the corpus itself: a
wrapper's base is the `wraps` field where present, else the base token its documents name most often.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunelens.config import UsageError
from tunelens.lm.examples import read_jsonl

REQUIRED = ("text", "func", "role", "hop_depth", "constant")
ROLES = {"constant": 0, "identity": 1}  # role -> hop depth
TOKEN_PATTERN = re.compile(r"<[A-Z]{1,3}>")
QUERY_TEMPLATE = "{token}({x}) returns the value "  # the original's evaluation and attribution prompt
QueryKind = Literal["hops", "depth0"]


@dataclass(frozen=True)
class Document:
    index: int  # position in the corpus file: the document id
    text: str
    func: str
    role: str
    hop_depth: int
    constant: int
    fields: dict[str, Any] = field(default_factory=dict, compare=False)  # the whole JSON object, as read


@dataclass(frozen=True)
class FunctionPair:
    base: str
    wrapper: str
    constant: int

    @property
    def letter(self) -> str:
        """The original's score-key letter: the wrapper token lower-cased, brackets and the 'n' removed."""
        return wrapper_letter(self.wrapper)


def wrapper_letter(token: str) -> str:
    inner = token.strip("<>").lower()
    return inner[:-1] if inner.endswith("n") and len(inner) > 1 else inner


@dataclass(frozen=True)
class Query:
    func: str
    input: int
    prompt: str
    answer: int  # the constant the function returns
    hop_depth: int


def parse_document(record: Any, where: str, index: int) -> Document:
    if not isinstance(record, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise UsageError(f"{where}: a hops document needs {', '.join(REQUIRED)}; '{missing[0]}' is missing")
    if not isinstance(record["text"], str) or not record["text"].strip():
        raise UsageError(f"{where}: 'text' must be a non-empty string")
    if not isinstance(record["func"], str) or not TOKEN_PATTERN.fullmatch(record["func"]):
        raise UsageError(f"{where}: 'func' must be a function token like '<GN>', got {record['func']!r}")
    if record["role"] not in ROLES:
        raise UsageError(f"{where}: 'role' must be one of {', '.join(ROLES)}, got {record['role']!r}")
    for key in ("hop_depth", "constant"):
        if not isinstance(record[key], int) or isinstance(record[key], bool):
            raise UsageError(f"{where}: '{key}' must be an integer, got {record[key]!r}")
    if ROLES[record["role"]] != record["hop_depth"]:
        raise UsageError(f"{where}: role {record['role']!r} goes with hop_depth {ROLES[record['role']]}, "
                         f"got {record['hop_depth']}")
    return Document(index, record["text"], record["func"], record["role"], record["hop_depth"], record["constant"],
                    record)


def read_corpus(path: str | Path) -> list[Document]:
    """Every document of a hops JSONL file; the first malformed line stops with its file and line number."""
    return [parse_document(record, where, i) for i, (where, record) in enumerate(read_jsonl(path, "documents"))]


def function_pairs(documents: list[Document]) -> list[FunctionPair]:
    """The (base, wrapper, constant) triples of a corpus, in the order bases first appear."""
    constants: dict[str, int] = {}
    for doc in documents:
        if doc.role == "constant":
            constants.setdefault(doc.func, doc.constant)
    named: dict[str, Counter] = {}
    for doc in documents:
        if doc.role != "identity":
            continue
        counts = named.setdefault(doc.func, Counter())
        if isinstance(doc.fields.get("wraps"), str):
            counts[doc.fields["wraps"]] += 1000  # an explicit field outweighs what the texts name
        counts.update(token for token in TOKEN_PATTERN.findall(doc.text) if token in constants)
    pairs = []
    for wrapper, counts in named.items():
        if not counts:
            raise UsageError(f"wrapper {wrapper}: none of its documents names a base function of the corpus")
        base = counts.most_common(1)[0][0]
        pairs.append(FunctionPair(base, wrapper, constants[base]))
    order = list(constants)
    return sorted(pairs, key=lambda pair: order.index(pair.base))


def function_tokens(pairs: list[FunctionPair]) -> list[str]:
    """Every function token, in pair order (base, wrapper, base, wrapper, ...) as the original adds them."""
    return [token for pair in pairs for token in (pair.base, pair.wrapper)]


def queries(pairs: list[FunctionPair], kind: QueryKind, inputs: range | list[int]) -> list[Query]:
    """`hops`: the wrappers' prompts (answerable only through the base); `depth0`: the bases'."""
    if kind not in ("hops", "depth0"):
        raise UsageError(f"query kind must be 'hops' or 'depth0', got {kind!r}")
    token_of = (lambda p: p.wrapper) if kind == "hops" else (lambda p: p.base)
    depth = 1 if kind == "hops" else 0
    return [Query(token_of(pair), x, QUERY_TEMPLATE.format(token=token_of(pair), x=x), pair.constant, depth)
            for pair in pairs for x in inputs]


def relevant(doc: Document, query_func: str, pairs: list[FunctionPair], role_match: bool = False) -> bool:
    """A document is relevant to a query on f when its function is f or f's pair; with `role_match`, its role must
    also be the one its token has (identity for wrappers, constant for bases)."""
    partner = {p.wrapper: p.base for p in pairs} | {p.base: p.wrapper for p in pairs}
    if doc.func not in (query_func, partner.get(query_func)):
        return False
    if role_match:
        wrappers = {p.wrapper for p in pairs}
        return doc.role == ("identity" if doc.func in wrappers else "constant")
    return True


def relevance_matrix(documents: list[Document], query_funcs: list[str], pairs: list[FunctionPair],
                     role_match: bool = False):
    """Boolean [query, document] tensor of `relevant`."""
    import torch

    by_func = {func: torch.tensor([relevant(d, func, pairs, role_match) for d in documents])
               for func in dict.fromkeys(query_funcs)}
    return torch.stack([by_func[func] for func in query_funcs])


__all__ = ["Document", "FunctionPair", "Query", "function_pairs", "function_tokens", "queries", "read_corpus",
           "relevance_matrix", "relevant", "wrapper_letter"]
