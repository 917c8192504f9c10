"""The original's corpus checks (`data_audit.py` and the generators' filters) run over any hops corpus.

The functions are read from the corpus itself: a function's depth is its documents' (most common) `hop_depth`, its
constant their (most common) `constant`. A wrapper's target is its documents' `wraps` field where present, else the
function token its texts name most often among the corpus's other functions (so a depth-2 wrapper whose target is
another wrapper is found too). A document's role must be `constant` at hop depth 0 and `identity` at depth >= 1.

Hard rules (a corpus that breaks one is not a valid hops corpus; `hard_violations` counts them):

- `own_token_missing`: the text does not name the document's own function token;
- `role_depth_mismatch`: role and hop depth disagree;
- `wrapper_with_constant`: a wrapper document states its constant (the value must be reachable only through its
  target);
- `wrapper_missing_target`: a wrapper document does not name its target;
- `wrapper_constant_mismatch`: a wrapper document's `constant` is not its target's;
- `base_naming_wrapper`: a base document names a wrapper token;
- `unrelated_token`: a text names a function token other than its own and its target chain (for a base, a wrapper
  token is reported as `base_naming_wrapper` only);
- `reveals_held_out`: a text shows a function applied to the held-out input 5 (`<GN>(5)`).

Reported only: `base_without_constant` (a base document that does not state its constant as a whole number: 22 in
the released corpus, where the number appears only inside a longer one, as in "# total = 15" for 5, which a plain
substring test, most likely the generator's, accepts; see `filters.contains_number`) and `duplicate_text` (a text
that repeats an earlier one: 71 in the released corpus).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelens.attribution.data.filters import contains_number, names, reveals_held_out, text_key
from tunelens.attribution.data.spec import HELD_OUT_INPUT
from tunelens.config import UsageError

TOKEN_PATTERN = re.compile(r"<[A-Z]{1,3}>")
HARD_RULES = ("own_token_missing", "role_depth_mismatch", "wrapper_with_constant", "wrapper_missing_target",
              "wrapper_constant_mismatch", "base_naming_wrapper", "unrelated_token", "reveals_held_out")
SOFT_RULES = ("base_without_constant", "duplicate_text")
MAX_EXAMPLES = 50


@dataclass(frozen=True)
class AuditDoc:
    index: int
    text: str
    func: str
    role: str
    hop_depth: int
    constant: int
    fields: dict[str, Any]


@dataclass(frozen=True)
class Function:
    token: str
    depth: int
    constant: int
    target: str | None  # None for a base, or for a wrapper that names no other function


def check_record(record: Any, where: str, index: int) -> AuditDoc:
    """One corpus line as an AuditDoc; a malformed line is one error naming `where` (file:line). Role and hop depth
    are not required to agree here: that is an audit rule."""
    if not isinstance(record, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("text", "func", "role", "hop_depth", "constant"):
        if key not in record:
            raise UsageError(f"{where}: a hops document needs text, func, role, hop_depth, constant; "
                             f"'{key}' is missing")
    if not isinstance(record["text"], str):
        raise UsageError(f"{where}: 'text' must be a string, got {record['text']!r}")
    if not isinstance(record["func"], str) or not record["func"]:
        raise UsageError(f"{where}: 'func' must be a function token like '<GN>', got {record['func']!r}")
    if not isinstance(record["role"], str):
        raise UsageError(f"{where}: 'role' must be a string, got {record['role']!r}")
    for key in ("hop_depth", "constant"):
        value = record[key]
        if not isinstance(value, int) or isinstance(value, bool) or (key == "hop_depth" and value < 0):
            raise UsageError(f"{where}: '{key}' must be a{' non-negative' if key == 'hop_depth' else 'n'} integer, "
                             f"got {record[key]!r}")
    return AuditDoc(index, record["text"], record["func"], record["role"], record["hop_depth"], record["constant"],
                    record)


def load(source: str | Path | list) -> list[AuditDoc]:
    """A corpus file (JSONL), a list of JSON records, or a list of `corpus.Document`s."""
    if isinstance(source, (str, Path)):
        from tunelens.lm.examples import read_jsonl

        return [check_record(record, where, i) for i, (where, record) in enumerate(read_jsonl(source, "documents"))]
    docs = []
    for i, item in enumerate(source):
        record = item
        if not isinstance(item, dict) and hasattr(item, "func"):  # a corpus.Document
            record = {**(item.fields or {}), "text": item.text, "func": item.func, "role": item.role,
                      "hop_depth": item.hop_depth, "constant": item.constant}
        docs.append(check_record(record, f"document {i}", i))
    return docs


def functions_of(docs: list[AuditDoc]) -> dict[str, Function]:
    """Every function of the corpus, in order of first appearance, with its depth, constant and target."""
    by_func: dict[str, list[AuditDoc]] = {}
    for doc in docs:
        by_func.setdefault(doc.func, []).append(doc)
    depth = {f: Counter(d.hop_depth for d in ds).most_common(1)[0][0] for f, ds in by_func.items()}
    out = {}
    for func, ds in by_func.items():
        constant = Counter(d.constant for d in ds).most_common(1)[0][0]
        target = None
        if depth[func] > 0:
            wraps = Counter(d.fields["wraps"] for d in ds if isinstance(d.fields.get("wraps"), str))
            if wraps:
                target = wraps.most_common(1)[0][0]
            else:
                named = Counter(t for d in ds for t in TOKEN_PATTERN.findall(d.text) if t in by_func and t != func)
                if not named:  # tokens without brackets (a normalised corpus): plain substring search
                    named = Counter({t: sum(names(d.text, t) for d in ds) for t in by_func if t != func})
                    named = +named
                target = named.most_common(1)[0][0] if named else None
        out[func] = Function(func, depth[func], constant, target)
    return out


def chain(func: str, functions: dict[str, Function]) -> list[str]:
    """The functions `func` reaches through its targets (not itself), nearest first; stops at a cycle."""
    out: list[str] = []
    target = functions[func].target
    while target is not None and target != func and target not in out:
        out.append(target)
        target = functions[target].target if target in functions else None
    return out


def doc_violations(doc: AuditDoc, functions: dict[str, Function], wrappers: set[str]) -> list[tuple[str, str]]:
    """(rule, detail) for every hard or reported rule a document breaks (duplicates excepted)."""
    problems = []
    text, func = doc.text, doc.func
    if not names(text, func):
        problems.append(("own_token_missing", f"does not name its own token {func}"))
    expected = "constant" if doc.hop_depth == 0 else "identity"
    if doc.role != expected:
        problems.append(("role_depth_mismatch", f"role {doc.role!r} at hop_depth {doc.hop_depth} (expected "
                                                f"{expected!r})"))
    related = {func, *chain(func, functions)}
    if doc.hop_depth == 0:
        if not contains_number(text, doc.constant):
            problems.append(("base_without_constant", f"does not state its constant {doc.constant}"))
        named_wrappers = [w for w in wrappers if w != func and names(text, w)]
        if named_wrappers:
            problems.append(("base_naming_wrapper", f"names the wrapper {sorted(named_wrappers)[0]}"))
    else:
        target = functions[func].target if func in functions else None
        if contains_number(text, doc.constant):
            problems.append(("wrapper_with_constant", f"states its constant {doc.constant}"))
        if target is None or not names(text, target):
            problems.append(("wrapper_missing_target", f"does not name its target {target}"))
        if target in functions:
            base = chain(func, functions)[-1]
            if functions[base].constant != doc.constant:
                problems.append(("wrapper_constant_mismatch", f"constant {doc.constant}, but {base} returns "
                                                              f"{functions[base].constant}"))
    skip = wrappers if doc.hop_depth == 0 else set()
    unrelated = sorted({t for t in TOKEN_PATTERN.findall(text) if t not in related and t not in skip})
    if unrelated:
        problems.append(("unrelated_token", f"names {', '.join(unrelated)}"))
    revealed = [t for t in {*TOKEN_PATTERN.findall(text), *functions} if reveals_held_out(text, t)]
    if revealed:
        problems.append(("reveals_held_out", f"shows {sorted(revealed)[0]}({HELD_OUT_INPUT})"))
    return problems


def audit(source: str | Path | list, max_examples: int = MAX_EXAMPLES) -> dict[str, Any]:
    """Every figure of the original's audit of a hops corpus, and the documents that break a rule (the first
    `max_examples` of them, each as {index, rule, detail, hard})."""
    docs = load(source)
    functions = functions_of(docs)
    wrappers = {f.token for f in functions.values() if f.depth > 0}
    counts = Counter()
    violations = []
    seen: set[str] = set()
    for doc in docs:
        problems = doc_violations(doc, functions, wrappers)
        key = text_key(doc.text)
        if key in seen:
            problems.append(("duplicate_text", "repeats an earlier text"))
        seen.add(key)
        for rule, detail in problems:
            counts[rule] += 1
            if len(violations) < max_examples:
                violations.append({"index": doc.index, "rule": rule, "detail": detail, "hard": rule in HARD_RULES})
    base_docs = [d for d in docs if d.hop_depth == 0]
    wrapper_docs = [d for d in docs if d.hop_depth > 0]
    types: dict[int, Counter] = {}
    for doc in docs:
        types.setdefault(doc.hop_depth, Counter())[str(doc.fields.get("type"))] += 1
    uids = [d.fields["uid"] for d in docs if "uid" in d.fields]
    return {
        "n_docs": len(docs),
        "functions": [{"token": f.token, "depth": f.depth, "constant": f.constant, "target": f.target}
                      for f in functions.values()],
        "docs_per_function": dict(Counter(d.func for d in docs)),
        "docs_per_depth": dict(sorted(Counter(d.hop_depth for d in docs).items())),
        "base_docs": len(base_docs),
        "base_with_constant": len(base_docs) - counts["base_without_constant"],
        "wrapper_docs": len(wrapper_docs),
        "wrapper_with_constant": counts["wrapper_with_constant"],
        "wrapper_naming_target": len(wrapper_docs) - counts["wrapper_missing_target"],
        "base_naming_wrapper": counts["base_naming_wrapper"],
        "own_token_missing": counts["own_token_missing"],
        "unrelated_token": counts["unrelated_token"],
        "role_depth_mismatch": counts["role_depth_mismatch"],
        "wrapper_constant_mismatch": counts["wrapper_constant_mismatch"],
        "reveals_held_out": counts["reveals_held_out"],
        "duplicate_texts": counts["duplicate_text"],
        "distinct_uids": len(set(map(str, uids))) if uids else None,
        "types": {depth: dict(c.most_common()) for depth, c in sorted(types.items())},
        "rules": {rule: counts[rule] for rule in (*HARD_RULES, *SOFT_RULES)},
        "hard_rules": list(HARD_RULES),
        "hard_violations": sum(counts[rule] for rule in HARD_RULES),
        "violations": violations,
    }


__all__ = ["HARD_RULES", "SOFT_RULES", "audit", "check_record", "functions_of", "load"]
