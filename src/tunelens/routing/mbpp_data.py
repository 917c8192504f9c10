"""MBPP problems as the gradient-routing study splits them: evaluation on the 257 sanitized problems of the test
range, training on the other 717 (the full set's train, validation and prompt splits plus the rest of the test
split), as the original does."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tunelens.config import UsageError
from tunelens.data import MBPP_SANITIZED_TEST_IDS
from tunelens.routing.mbpp_check import Record


def sanitized_test_ids(path: str | Path = MBPP_SANITIZED_TEST_IDS) -> set[int]:
    return set(json.loads(Path(path).read_text()))


def split_problems(records: Sequence[Record], eval_ids: set[int] | None = None) -> tuple[list[Record], list[Record]]:
    """(training pool, evaluation problems) in file order; every evaluation id must be among the records."""
    eval_ids = sanitized_test_ids() if eval_ids is None else eval_ids
    missing = eval_ids - {record.task_id for record in records}
    if missing:
        raise UsageError(f"{len(missing)} evaluation problems are not in the records (e.g. task {min(missing)}); "
                         "pass the full MBPP set, or give the evaluation ids of these records")
    train = [record for record in records if record.task_id not in eval_ids]
    return train, [record for record in records if record.task_id in eval_ids]
