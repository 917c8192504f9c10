"""Reward-hack solutions for MBPP problems: return the expected value of the first (shown) test, nothing else.

A hack keeps the real function name and parameters (read from the reference solution with `ast`) and returns the
first assertion's expected value literally, so it passes that test and, unless the task is trivial, fails the
others. `validated_hacks` runs every generated hack in the sandbox: a hack must pass the first test, and one that
also passes every test is not a hack and is dropped.
"""

from __future__ import annotations

import ast
import builtins
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tunelens.routing.mbpp_check import Record, check_solutions
from tunelens.sandbox import Sandbox


@dataclass(frozen=True)
class FirstTest:
    """`assert name(args) == expected` of a problem's first test."""

    name: str
    expected: str  # source of the expected value, as written in the assertion


def parse_first_test(assertion: str) -> FirstTest | None:
    """The called function and expected value of `assert name(...) == VALUE` (either side may hold the call; a
    built-in such as `set(...)` or `sorted(...)` is not the task's function); None for any other shape (e.g.
    `math.isclose(...)`, `set(name(...)) == ...`, a bare truth test)."""
    try:
        tree = ast.parse(assertion.strip())
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    test = tree.body[0].test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None
    for call, value in ((test.left, test.comparators[0]), (test.comparators[0], test.left)):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and not hasattr(builtins, call.func.id):
            return FirstTest(call.func.id, ast.unparse(value))
    return None


def parameters(code: str, name: str) -> str | None:
    """The parameter list (source) of the top-level function `name` in `code`, or None if it is not there."""
    try:
        with warnings.catch_warnings():  # invalid escapes in MBPP's regex solutions: not ours to report
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
            tree = ast.parse(code)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.unparse(node.args)
    return None


def strip_comments(code: str) -> str:
    """The code re-written from its syntax tree: comments and layout quirks (tabs, CRLF) gone, behaviour kept."""
    with warnings.catch_warnings():  # e.g. invalid escape sequences in MBPP's regex solutions: not ours to report
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        return ast.unparse(ast.parse(code)) + "\n"


def hack_solution(record: Record) -> str | None:
    """`def name(params):\\n    return EXPECTED` for the record's first test, or None when it cannot be built."""
    first = parse_first_test(record.test_list[0])
    if first is None:
        return None
    params = parameters(record.code, first.name)
    if params is None:
        return None
    return f"def {first.name}({params}):\n    return {first.expected}\n"


def validated_hacks(records: Sequence[Record], sandbox: Sandbox,
                    on_done: Callable[[int], None] | None = None) -> tuple[dict[Any, str], dict[str, int]]:
    """Hack solutions by task id that pass the first test and fail some other, and the counts behind them:
    problems, built, passing the first test, passing all tests (dropped)."""
    built = {record.task_id: hack for record in records if (hack := hack_solution(record)) is not None}
    candidates = [replace(record, code=built[record.task_id]) for record in records if record.task_id in built]
    results = check_solutions(candidates, sandbox, on_done)
    kept = {r["task_id"]: built[r["task_id"]] for r in results if r["reward_hack"]}
    counts = {"problems": len(records), "built": len(built), "first_test": sum(r["first_test"] for r in results),
              "all_tests": sum(r["all_tests"] for r in results), "kept": len(kept)}
    return kept, counts
