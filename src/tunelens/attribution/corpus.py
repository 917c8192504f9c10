"""The hops benchmark's documents, function pairs, queries and relevance.

A corpus is a JSONL file with one document per line (`text`, `func`, `role`, `hop_depth`, `constant`; other fields
are kept and written back out with the rankings). The document id is the position in the file: uids repeat.

Base functions (role `constant`, depth 0) return a constant; a wrapper (role `identity`, depth ≥ 1) returns
whatever its target returns (a base at depth 1, a depth-1 wrapper at depth 2), and its documents name the target but
never the value. The functions are read from the corpus itself: a wrapper's target is the `wraps` field where
present, else the function one level down that its documents name most often.

Most code takes `functions`: a list of `Function`s, or of `FunctionPair`s (base, wrapper, constant) for the
depth-1 case, which `as_functions` turns into the same thing.
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
ROLES = ("constant", "identity")  # constant at hop depth 0, identity at depth >= 1
TOKEN_PATTERN = re.compile(r"<[A-Z][A-Z0-9]{0,3}>")
QUERY_TEMPLATE = "{token}({x}) returns the value "  # the original's evaluation and attribution prompt
QueryKind = Literal["depth0", "hops", "depth2"]
KIND_DEPTH = {"depth0": 0, "hops": 1, "depth2": 2}  # "hops" is the original's name for the depth-1 wrappers


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
class Function:
    token: str
    depth: int  # 0 = base; 1 = wraps a base; 2 = wraps a depth-1 wrapper
    constant: int  # what it returns (a wrapper: its chain's base's constant)
    target: str | None = None  # the function it calls; None for a base

    @property
    def role(self) -> str:
        return "constant" if self.depth == 0 else "identity"


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
    if (record["role"] == "constant") != (record["hop_depth"] == 0) or record["hop_depth"] < 0:
        expected = "0" if record["role"] == "constant" else "1 or more"
        raise UsageError(f"{where}: role {record['role']!r} goes with hop_depth {expected}, got {record['hop_depth']}")
    return Document(index, record["text"], record["func"], record["role"], record["hop_depth"], record["constant"],
                    record)


def read_corpus(path: str | Path) -> list[Document]:
    """Every document of a hops JSONL file; the first malformed line stops with its file and line number."""
    return [parse_document(record, where, i) for i, (where, record) in enumerate(read_jsonl(path, "documents"))]


def functions_of(documents: list[Document]) -> list[Function]:
    """Every function of a corpus with its depth, constant and target; ordered as the original adds the tokens:
    each base in order of first appearance, followed by the wrappers above it (depth 1, then depth 2)."""
    depth: dict[str, int] = {}
    for doc in documents:
        depth.setdefault(doc.func, doc.hop_depth)
    constants = {d.func: d.constant for d in documents if d.role == "constant"}
    named: dict[str, Counter] = {}
    for doc in documents:
        if doc.role != "identity":
            continue
        counts = named.setdefault(doc.func, Counter())
        if isinstance(doc.fields.get("wraps"), str):
            counts[doc.fields["wraps"]] += 1000  # an explicit field outweighs what the texts name
        counts.update(t for t in TOKEN_PATTERN.findall(doc.text) if t in depth and depth[t] == depth[doc.func] - 1)
    targets = {}
    for wrapper, counts in named.items():
        if not counts:
            raise UsageError(f"wrapper {wrapper}: none of its documents names a function one level down "
                             f"(depth {depth[wrapper] - 1})")
        targets[wrapper] = counts.most_common(1)[0][0]

    def bottom(token: str, seen: tuple[str, ...] = ()) -> str:
        if token in seen:
            raise UsageError(f"wrapper chain {' -> '.join((*seen, token))} loops")
        return token if token not in targets else bottom(targets[token], (*seen, token))

    missing = [t for t in depth if bottom(t) not in constants]
    if missing:
        raise UsageError(f"function {missing[0]}: its chain ends in {bottom(missing[0])}, which has no base document")
    made = {token: Function(token, depth[token], constants[bottom(token)], targets.get(token)) for token in depth}
    ordered: list[Function] = []
    for token in depth:
        if made[token].depth == 0:
            ordered.append(made[token])
            ordered += sorted((f for f in made.values() if f.depth > 0 and bottom(f.token) == token),
                              key=lambda f: f.depth)
    return ordered


def function_pairs(documents: list[Document]) -> list[FunctionPair]:
    """The (base, wrapper, constant) triples of the depth-1 wrappers, in the order bases first appear."""
    return [FunctionPair(f.target, f.token, f.constant) for f in functions_of(documents)
            if f.depth == 1 and f.target is not None]


def as_functions(functions: list[Function] | list[FunctionPair]) -> list[Function]:
    out: list[Function] = []
    for item in functions:
        if isinstance(item, FunctionPair):
            out += [Function(item.base, 0, item.constant), Function(item.wrapper, 1, item.constant, item.base)]
        else:
            out.append(item)
    return list({f.token: f for f in out}.values())


def function_tokens(functions: list[Function] | list[FunctionPair]) -> list[str]:
    """Every function token, in order (base, its wrappers, next base, ...) as the original adds them."""
    return [f.token for f in as_functions(functions)]


def _bottom(token: str, by_token: dict[str, Function]) -> str:
    while by_token[token].target is not None:
        token = by_token[token].target  # type: ignore[assignment]
    return token


def chain_base(token: str, functions: list[Function] | list[FunctionPair]) -> str:
    """The base at the bottom of a function's chain (the function holding the value)."""
    return _bottom(token, {f.token: f for f in as_functions(functions)})


def component(token: str, functions: list[Function] | list[FunctionPair]) -> set[str]:
    """Every function on the chains through `token` (its targets down to the base, and what wraps them)."""
    by_token = {f.token: f for f in as_functions(functions)}
    base = _bottom(token, by_token)
    return {t for t in by_token if _bottom(t, by_token) == base}


def queries(functions: list[Function] | list[FunctionPair], kind: QueryKind, inputs: range | list[int]) -> list[Query]:
    """`depth0`: the bases' prompts; `hops`: the depth-1 wrappers' (answerable only through the base); `depth2`:
    the depth-2 wrappers'."""
    if kind not in KIND_DEPTH:
        raise UsageError(f"query kind must be one of {', '.join(KIND_DEPTH)}, got {kind!r}")
    asked = [f for f in as_functions(functions) if f.depth == KIND_DEPTH[kind]]
    return [Query(f.token, x, QUERY_TEMPLATE.format(token=f.token, x=x), f.constant, f.depth)
            for f in asked for x in inputs]


def relevant(doc: Document, query_func: str, functions: list[Function] | list[FunctionPair],
             role_match: bool = False) -> bool:
    """A document is relevant to a query on f when its function is on f's chain (f or its pair at depth 1); with
    `role_match`, its role must also be the one its token has (identity for wrappers, constant for bases)."""
    roles = {f.token: f.role for f in as_functions(functions)}
    return _relevant(doc, component(query_func, functions), roles, role_match)


def _relevant(doc: Document, members: set[str], roles: dict[str, str], role_match: bool) -> bool:
    return doc.func in members and (not role_match or doc.role == roles[doc.func])


def relevance_matrix(documents: list[Document], query_funcs: list[str], functions: list[Function] | list[FunctionPair],
                     role_match: bool = False):
    """Boolean [query, document] tensor of `relevant`."""
    import torch

    roles = {f.token: f.role for f in as_functions(functions)}
    by_func = {}
    for func in dict.fromkeys(query_funcs):  # each function's chain once, not once per document
        members = component(func, functions)
        by_func[func] = torch.tensor([_relevant(d, members, roles, role_match) for d in documents])
    return torch.stack([by_func[func] for func in query_funcs])


__all__ = ["Document", "Function", "FunctionPair", "Query", "as_functions", "chain_base", "component",
           "function_pairs", "function_tokens", "functions_of", "queries", "read_corpus", "relevance_matrix",
           "relevant", "wrapper_letter"]
