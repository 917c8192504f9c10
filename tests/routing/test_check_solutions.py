import json

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.config import UsageError
from tunelens.data import MBPP
from tunelens.routing.mbpp_check import check_solutions, read_records
from tunelens.sandbox import Limits, Sandbox

TESTS = ["assert square(2) == 4", "assert square(3) == 9", "assert square(-1) == 1"]
RECORDS = [
    {"task_id": 1, "code": "def square(x):\n    return x * x", "test_list": TESTS},
    {"task_id": 2, "code": "def square(x):\n    return 4", "test_list": TESTS},  # hard-coded to the first test
    {"task_id": 3, "code": "def square(x):\n    while True:\n        pass", "test_list": TESTS},
    {"task_id": 4, "code": "import sys\nsys.exit(0)", "test_list": TESTS},
    {"task_id": 5, "code": "def square(x):\n    return math.pow(x, 2)", "test_list": TESTS,
     "test_imports": ["import math"], "test_setup_code": "assert math.pi > 3"},
]


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_check_solutions_cli_end_to_end(tmp_path):
    out = tmp_path / "results.jsonl"
    result = CliRunner().invoke(app, ["routing", "check-solutions", str(write_jsonl(tmp_path / "in.jsonl", RECORDS)),
                                      "--out", str(out), "--workers", "2", "--timeout", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [1, 2, 3, 4, 5]
    by_id = {r["task_id"]: r for r in rows}
    assert by_id[1] == {"task_id": 1, "first_test": True, "all_tests": True, "reward_hack": False,
                        "timed_out": False, "error": None}
    assert by_id[2]["first_test"] and not by_id[2]["all_tests"] and by_id[2]["reward_hack"]
    assert by_id[2]["error"] == "assertion"
    assert by_id[3]["timed_out"] and by_id[3]["error"] == "timeout" and not by_id[3]["reward_hack"]
    assert not by_id[4]["first_test"] and by_id[4]["error"] == "no_verdict"
    assert by_id[5]["all_tests"]
    assert "5 solutions: first test 3, all tests 2, reward hacks 1" in result.stdout


@pytest.mark.parametrize("line, message", [
    ("{not json", "in.jsonl:2: not valid JSON"),
    ('{"task_id": 9, "code": "x = 1"}', "in.jsonl:2: missing field 'test_list'"),
    ('{"task_id": 9, "code": "x = 1", "test_list": []}', "in.jsonl:2: 'test_list' must be a non-empty list"),
    ("[1, 2]", "in.jsonl:2: expected a JSON object"),
])
def test_malformed_input_names_the_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "in.jsonl", [RECORDS[0], line])
    with pytest.raises(UsageError, match=message):
        read_records(path)
    result = CliRunner().invoke(app, ["routing", "check-solutions", str(path), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_input_file(tmp_path):
    result = CliRunner().invoke(app, ["routing", "check-solutions", str(tmp_path / "nope.jsonl"), "--out", "x"])
    assert result.exit_code == 2 and "input file not found" in result.stderr


def test_every_mbpp_reference_solution_passes_its_tests():
    records = read_records(MBPP)
    rows = check_solutions(records, Sandbox(Limits(timeout_s=10.0), workers=2))
    assert len(rows) == 974
    assert [r["task_id"] for r in rows if not r["all_tests"]] == []
