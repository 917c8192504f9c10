"""Generate a hops corpus: N function pairs, hop depth up to D, K documents per base and M per wrapper, from a text
backend (the offline templates, or an OpenAI-compatible endpoint), every candidate passed through the original's
filters and de-duplicated by md5.

Tokens: with at most 10 pairs, the released ones (`<GN>` … `<RN>`, `<FN>` … `<YN>`); beyond, `<B01>`, `<W01>`, ...;
depth-2 wrappers are `<D01>`, ... (each calls the depth-1 wrapper of the same index). Constants: 5 + 2i as in the
original, or a seeded draw of distinct integers in [3, 99].
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tunelens.attribution.data.filters import text_key, violations
from tunelens.attribution.data.spec import DOC_TYPES, RELEASED_BASES, RELEASED_WRAPPERS, FunctionSpec
from tunelens.config import UsageError

Constants = Literal["released", "random"]


class Backend(Protocol):
    name: str

    def propose(self, spec: FunctionSpec, doc_type: str, n: int, seed: int,
                functions: list[FunctionSpec]) -> list[str]: ...


def function_specs(n_pairs: int = 10, depth: int = 1, constants: Constants = "released", seed: int = 0
                   ) -> list[FunctionSpec]:
    """Bases, their depth-1 wrappers and (depth 2) a wrapper of each wrapper, in that order per chain."""
    if not 1 <= n_pairs <= 90:
        raise UsageError(f"pairs must be between 1 and 90, got {n_pairs}")
    if depth not in (1, 2):
        raise UsageError(f"depth must be 1 or 2, got {depth}")
    if constants == "released":
        values = [5 + 2 * i for i in range(n_pairs)]
        if values[-1] > 100:
            raise UsageError(f"{n_pairs} pairs with constants 5 + 2i go past 100: use constants=random "
                             "(or at most 48 pairs)")
    elif constants == "random":
        if n_pairs > 97:
            raise UsageError("at most 97 distinct constants in [3, 99]")
        values = random.Random(f"constants/{seed}").sample(range(3, 100), n_pairs)
    else:
        raise UsageError(f"constants must be released or random, got {constants!r}")
    released = n_pairs <= len(RELEASED_BASES)
    specs = []
    for i, value in enumerate(values):
        base = RELEASED_BASES[i] if released else f"<B{i + 1:02d}>"
        wrapper = RELEASED_WRAPPERS[i] if released else f"<W{i + 1:02d}>"
        specs += [FunctionSpec(base, 0, value), FunctionSpec(wrapper, 1, value, base)]
        if depth == 2:
            specs.append(FunctionSpec(f"<D{i + 1:02d}>", 2, value, wrapper))
    return specs


@dataclass
class GenerationReport:
    accepted: int = 0
    rejected: int = 0  # broke a filter
    duplicates: int = 0
    reasons: dict[str, int] | None = None


def generate_corpus(specs: Sequence[FunctionSpec], backend: Backend, docs_per_base: int = 200,
                    docs_per_wrapper: int = 100, doc_types: Sequence[str] = DOC_TYPES, seed: int = 0,
                    max_rounds: int = 50, log: Callable[[str], None] = print
                    ) -> tuple[list[dict[str, Any]], GenerationReport]:
    """Records (text, func, role, hop_depth, constant, type, uid, wraps) shuffled by seed, and what was rejected.

    Each function's documents are spread evenly over the document types; a type asks the backend for candidates
    round after round (a new seed each round) until it has its share of accepted, distinct texts."""
    unknown = [t for t in doc_types if t not in DOC_TYPES]
    if unknown:
        raise UsageError(f"unknown document type {unknown[0]!r} (expected some of {', '.join(DOC_TYPES)})")
    functions = list(specs)
    seen: set[str] = set()
    report = GenerationReport(reasons={})
    records: list[dict[str, Any]] = []
    for spec in functions:
        total = docs_per_base if spec.is_base else docs_per_wrapper
        shares = [total // len(doc_types) + (i < total % len(doc_types)) for i in range(len(doc_types))]
        for doc_type, share in zip(doc_types, shares):
            kept: list[str] = []
            for round_ in itertools.count():
                if len(kept) >= share:
                    break
                if round_ >= max_rounds:
                    raise UsageError(f"{spec.token} {doc_type}: only {len(kept)} of {share} distinct documents passed "
                                     f"the filters after {max_rounds} rounds (backend {backend.name}); ask for fewer "
                                     "documents per function")
                for text in backend.propose(spec, doc_type, share - len(kept), seed * 100_003 + round_, functions):
                    problems = violations(text, spec, functions)
                    if problems:
                        report.rejected += 1
                        assert report.reasons is not None
                        report.reasons[problems[0]] = report.reasons.get(problems[0], 0) + 1
                        continue
                    key = text_key(text)
                    if key in seen:
                        report.duplicates += 1
                        continue
                    seen.add(key)
                    kept.append(text)
                    if len(kept) >= share:
                        break
            for k, text in enumerate(kept):
                record = {"text": text, "func": spec.token, "role": spec.role, "hop_depth": spec.depth,
                          "constant": spec.constant, "type": doc_type,
                          "uid": f"gen_{backend.name}_{spec.token.strip('<>').lower()}_{doc_type}_{k:04d}"}
                if spec.target is not None:
                    record["wraps"] = spec.target
                records.append(record)
    report.accepted = len(records)
    random.Random(f"order/{seed}").shuffle(records)
    log(f"generated {len(records)} documents for {len(functions)} functions ({report.rejected} candidates broke a "
        f"filter, {report.duplicates} duplicates dropped)")
    return records, report


def variety(records: Sequence[dict[str, Any]], max_pairs: int = 2000, seed: int = 0) -> dict[str, float]:
    """How different one function's documents are: the share of distinct texts, and the mean token-Jaccard
    similarity of pairs of documents of the same function (word tokens; a sample of at most `max_pairs` pairs per
    function)."""
    rng = random.Random(seed)
    by_func: dict[str, list[set[str]]] = {}
    for record in records:
        by_func.setdefault(record["func"], []).append(set(record["text"].split()))
    similarities = []
    for bags in by_func.values():
        pairs = list(itertools.combinations(range(len(bags)), 2))
        for i, j in rng.sample(pairs, min(max_pairs, len(pairs))):
            union = bags[i] | bags[j]
            similarities.append(len(bags[i] & bags[j]) / len(union) if union else 1.0)
    texts = [r["text"] for r in records]
    return {"distinct_texts": len(set(texts)) / max(len(texts), 1),
            "mean_jaccard_within_function": sum(similarities) / max(len(similarities), 1)}


__all__ = ["Backend", "GenerationReport", "function_specs", "generate_corpus", "variety"]
