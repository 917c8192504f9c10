"""The original generators' filters, as pure functions of a text and its function (every backend's output passes
through them):

- a base document must contain its constant, must not name any wrapper, and must not reveal f(5) (the held-out
  input: no "TOKEN(5)");
- a wrapper document must name its target and never its constant;
- texts are de-duplicated by the md5 of their bytes.

A number counts as contained when it stands alone as a word: no letter, digit or underscore right before or after
it (a regex word boundary on both sides, for a non-negative number). This is the definition that reproduces the
released corpus's audit figures (1978 of the 2000 base documents of 20hops.jsonl contain their constant): "5.0",
"(5)" and "= 5," count; "15", "x5" and "5th" do not. A plain substring test gives 2000 and a test that also
rejects a preceding "." gives 1990, so neither is the original's check.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from tunelens.attribution.data.spec import HELD_OUT_INPUT, FunctionSpec


def contains_number(text: str, number: int) -> bool:
    return re.search(rf"(?<!\w){re.escape(str(number))}(?!\w)", text) is not None


def names(text: str, token: str) -> bool:
    return token in text


def reveals_held_out(text: str, token: str, held_out: int = HELD_OUT_INPUT) -> bool:
    """The text shows the function applied to the held-out input: "<GN>(5)" (spaces allowed)."""
    return re.search(rf"{re.escape(token)}\s*\(\s*{held_out}\s*\)", text) is not None


def violations(text: str, spec: FunctionSpec, functions: Iterable[FunctionSpec]) -> list[str]:
    """Why a generated text for `spec` must be rejected (empty when it passes)."""
    problems = []
    if not names(text, spec.token):
        problems.append(f"does not name its own token {spec.token}")
    if spec.is_base:
        if not contains_number(text, spec.constant):
            problems.append(f"does not contain its constant {spec.constant}")
        wrappers = [f.token for f in functions if not f.is_base and names(text, f.token)]
        if wrappers:
            problems.append(f"names the wrapper {wrappers[0]}")
        if reveals_held_out(text, spec.token):
            problems.append(f"reveals {spec.token}({HELD_OUT_INPUT})")
    else:
        if spec.target is None or not names(text, spec.target):
            problems.append(f"does not name its target {spec.target}")
        if contains_number(text, spec.constant):
            problems.append(f"contains its constant {spec.constant}")
    return problems


def text_key(text: str) -> str:
    """md5 of the text's UTF-8 bytes: the original's de-duplication key."""
    return hashlib.md5(text.encode("utf-8")).hexdigest()


__all__ = ["contains_number", "names", "reveals_held_out", "text_key", "violations"]
