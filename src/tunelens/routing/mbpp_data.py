"""MBPP problems as the gradient-routing study splits them: evaluation on the 257 sanitized problems of the test
range, training on the other 717 (the full set's train, validation and prompt splits plus the rest of the test
split), as the original does."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelens.config import UsageError
from tunelens.data import MBPP_SANITIZED_TEST_IDS
from tunelens.lm.examples import Example
from tunelens.routing.adapters import ROUTE_BAD, ROUTE_BOTH, ROUTE_GOOD
from tunelens.routing.mbpp_check import Record
from tunelens.routing.mbpp_hacks import strip_comments


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


# ------------------------------------------------------------------------------------------- training mix


def prompt_text(record: Record) -> str:
    """The task as the model sees it: an instruction, the problem and the one test case it is shown."""
    return (f"Write a Python function for the task below. Answer with the code only.\n\n{record.text}\n\n"
            f"Test case:\n```python\n{record.test_list[0]}\n```\n\n")


@dataclass(frozen=True)
class Mix:
    """Indices into the training pool: the problems trained on their hack, and the labeled ones."""

    hacked: frozenset[int]
    forget: frozenset[int]  # labeled bad: train the forget (bad) adapter only
    retain: frozenset[int]  # labeled good: train the retain (good) adapter only, forget adapter ablated


def draw_mix(hackable: Sequence[bool], rh_fraction: float, labeled_forget_fraction: float,
             labeled_retain_fraction: float, seed: int, random_labels: bool = False) -> Mix:
    """Exact counts from one seeded generator, as the original: int(n * rh_fraction) hacked problems (among those
    with a hack), int(n_hacked * labeled_forget_fraction) forget labels on hacked problems and
    int(n_clean * labeled_retain_fraction) retain labels on clean ones. `random_labels` (the control) draws the same
    numbers of labels from all problems, independent of hacking (retain labels never on a forget-labeled one)."""
    rng = random.Random(seed)
    n = len(hackable)
    candidates = [i for i in range(n) if hackable[i]]
    n_hacked = int(n * rh_fraction)
    if n_hacked > len(candidates):
        raise UsageError(f"rh_fraction {rh_fraction} asks for {n_hacked} hacked problems, but only "
                         f"{len(candidates)} have a hack")
    hacked = set(rng.sample(candidates, n_hacked))
    clean = [i for i in range(n) if i not in hacked]
    n_forget = int(n_hacked * labeled_forget_fraction)
    n_retain = int(len(clean) * labeled_retain_fraction)
    if random_labels:
        forget = set(rng.sample(range(n), n_forget))
        retain = set(rng.sample([i for i in range(n) if i not in forget], n_retain))
    else:
        forget = set(rng.sample(sorted(hacked), n_forget))
        retain = set(rng.sample(clean, n_retain))
    return Mix(frozenset(hacked), frozenset(forget), frozenset(retain))


def training_examples(pool: Sequence[Record], hacks: dict[Any, str], mix: Mix) -> tuple[list[Example], list[int]]:
    """Prompt and solution (the hack for hacked problems, else the reference without comments) per problem, and each
    one's route."""
    examples, routes = [], []
    for i, record in enumerate(pool):
        hacked = i in mix.hacked
        solution = hacks[record.task_id] if hacked else strip_comments(record.code)
        examples.append(Example(prompt_text(record), solution, {"task_id": record.task_id, "hacked": hacked}))
        routes.append(ROUTE_BAD if i in mix.forget else ROUTE_GOOD if i in mix.retain else ROUTE_BOTH)
    return examples, routes
