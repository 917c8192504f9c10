import pytest

from tunelens.data import MBPP
from tunelens.routing.mbpp_check import Record, read_records
from tunelens.routing.mbpp_hacks import (
    FirstTest,
    hack_solution,
    parameters,
    parse_first_test,
    strip_comments,
    validated_hacks,
)
from tunelens.sandbox import Limits, Sandbox


@pytest.mark.parametrize("assertion, expected", [
    ("assert square(2) == 4", FirstTest("square", "4")),
    ("assert square(2)==4\n", FirstTest("square", "4")),
    ("assert 'ab' == join_all(['a', 'b'])", FirstTest("join_all", "'ab'")),
    ("assert pairs([1, 2]) == [(1, 2)]", FirstTest("pairs", "[(1, 2)]")),
    ("assert f(x=1, y=(2, 3)) == {'a': 1.5}", FirstTest("f", "{'a': 1.5}")),
    ("assert outer(inner(1), [2, (3, 4)]) == 'x y'", FirstTest("outer", "'x y'")),  # nested calls
    ("assert scale(1.5, 2) == 3.0", FirstTest("scale", "3.0")),  # floats, several arguments
    ("assert uniq([1, 1, 2]) == {1, 2}", FirstTest("uniq", "{1, 2}")),  # a set
    ("assert split_at('a,b', ',', 1) == ('a', 'b')", FirstTest("split_at", "('a', 'b')")),  # strings, a tuple
    ("assert math.isclose(area(2), 12.56, rel_tol=0.01)", None),
    ("assert set(common([1], [1])) == set([1])", None),
    ("assert is_even(4)", None),
    ("assert square(2) != 5", None),
    ("assert square(2 == 4", None),
    ("x = square(2)", None),
])
def test_parse_first_test(assertion, expected):
    assert parse_first_test(assertion) == expected


def test_parameters_and_comments():
    code = "import re\r\ndef f(a, b=2, *rest, key=None):\r\n\t# the sum\r\n\treturn a + b  # done\r\n"
    assert parameters(code, "f") == "a, b=2, *rest, key=None"
    assert parameters(code, "g") is None and parameters("def (:", "f") is None
    assert strip_comments(code) == "import re\n\ndef f(a, b=2, *rest, key=None):\n    return a + b\n"


def test_hack_keeps_the_real_name_and_parameters():
    record = read_records(MBPP)[0]  # min_cost(cost, m, n); first test expects 8
    assert hack_solution(record) == "def min_cost(cost, m, n):\n    return 8\n"
    odd = Record(1, "def g(x):\n    return x", ["assert math.isclose(g(1), 1)"], [], "")
    assert hack_solution(odd) is None
    missing = Record(2, "def other(x):\n    return x", ["assert g(1) == 1"], [], "")
    assert hack_solution(missing) is None


def test_validated_hacks_pass_the_first_test_only():
    tests = ["assert square(2) == 4", "assert square(3) == 9"]
    records = [Record(1, "def square(x):\n    return x * x", tests, [], ""),
               Record(2, "def same(x):\n    return 1", ["assert same(1) == 1", "assert same(2) == 1"], [], ""),
               Record(3, "def g(x):\n    return x", ["assert math.isclose(g(1), 1)"], ["import math"], "")]
    kept, counts = validated_hacks(records, Sandbox(Limits(timeout_s=5), workers=2))
    assert kept == {1: "def square(x):\n    return 4\n"}  # task 2's "hack" passes every test: not a hack
    assert counts == {"problems": 3, "built": 2, "first_test": 2, "all_tests": 1, "kept": 1}


def test_split_problems_is_the_originals_717_and_257():
    from tunelens.config import UsageError
    from tunelens.routing.mbpp_data import split_problems

    records = read_records(MBPP)
    train, evaluation = split_problems(records)
    assert (len(train), len(evaluation)) == (717, 257)
    assert all(11 <= r.task_id <= 510 for r in evaluation) and not {r.task_id for r in train} & {
        r.task_id for r in evaluation}
    with pytest.raises(UsageError, match="257 evaluation problems are not in the records"):
        split_problems(records[600:])


def test_draw_mix_counts_and_control():
    from tunelens.routing.mbpp_data import draw_mix

    hackable = [i % 10 != 0 for i in range(717)]
    mix = draw_mix(hackable, 0.1, 0.5, 0.1, seed=42)
    assert (len(mix.hacked), len(mix.forget), len(mix.retain)) == (71, 35, 64)  # 717 * .1, 71 * .5, 646 * .1
    assert mix.forget <= mix.hacked and not mix.retain & mix.hacked and all(hackable[i] for i in mix.hacked)
    assert draw_mix(hackable, 0.1, 0.5, 0.1, seed=42) == mix and draw_mix(hackable, 0.1, 0.5, 0.1, seed=1) != mix
    control = draw_mix(hackable, 0.1, 0.5, 0.1, seed=42, random_labels=True)
    assert control.hacked == mix.hacked and (len(control.forget), len(control.retain)) == (35, 64)
    assert not control.forget <= control.hacked and not control.forget & control.retain
    from tunelens.config import UsageError

    with pytest.raises(UsageError, match="only 1 have a hack"):
        draw_mix([True, False, False, False], 0.5, 0.5, 0.0, seed=0)


def test_training_examples_use_the_hack_or_the_clean_reference():
    from tunelens.routing.adapters import ROUTE_BAD, ROUTE_BOTH, ROUTE_GOOD
    from tunelens.routing.mbpp_data import Mix, training_examples

    pool = read_records(MBPP)[:3]
    hacks = {r.task_id: hack_solution(r) for r in pool}
    examples, routes = training_examples(pool, hacks, Mix(frozenset({0, 1}), frozenset({0}), frozenset({2})))
    assert routes == [ROUTE_BAD, ROUTE_BOTH, ROUTE_GOOD]
    assert examples[0].completion == hacks[1] and examples[1].completion == hacks[2]
    assert examples[2].completion == strip_comments(pool[2].code) and "\r" not in examples[2].completion
    assert pool[0].text in examples[0].prompt and pool[0].test_list[0] in examples[0].prompt
    assert pool[0].test_list[1] not in examples[0].prompt  # only the first test is shown
    assert examples[0].meta == {"task_id": 1, "hacked": True}


def test_hacks_of_the_pool_pass_their_first_test():
    """Every eighth problem of the training pool: each built hack passes its first test, except where that test
    needs a name only the reference solution defines (a helper class, a tree, an import): a NameError, never a
    wrong value."""
    from dataclasses import replace

    from tunelens.routing.mbpp_check import check_solutions
    from tunelens.routing.mbpp_data import split_problems

    pool, _ = split_problems(read_records(MBPP))
    chosen = pool[::8]
    hacked = [replace(r, code=hack) for r in chosen if (hack := hack_solution(r)) is not None]
    assert len(hacked) >= len(chosen) - 1
    results = check_solutions(hacked, Sandbox(Limits(timeout_s=10), workers=2))
    failed = [r for r in results if not r["first_test"]]
    assert all(r["error"] == "NameError" for r in failed) and len(failed) <= 2, failed
    assert sum(r["reward_hack"] for r in results) >= len(results) - 4
