"""The ALL-CAPS task: stories, some written in capitals (the "bad" behaviour), some of those labeled.

Each training story's fate is a pure function of (seed, index): three md5-hashed uniform draws decide whether it
is uppercased (caps_frac), whether an uppercased story is labeled bad (labeled_bad_frac), and whether a clean one
gets a labeled-good step (labeled_good_frac), so adding stories or changing one fraction leaves the other
decisions alone, as in the original's per-index Bernoullis.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tunelens.config import UsageError
from tunelens.lm.examples import read_jsonl
from tunelens.routing.adapters import ROUTE_BAD, ROUTE_BOTH, ROUTE_GOOD

MIN_LETTERS = 10
MIN_UPPER_FRAC = 0.8
TEXT_FIELDS = ("story", "text")


def uniform_draw(seed: int, index: int, what: str) -> float:
    """A uniform number in [0, 1) from the md5 of (seed, index, what)."""
    digest = hashlib.md5(f"{seed}:{index}:{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class StoryDraw:
    is_caps: bool
    route: int  # ROUTE_BOTH, ROUTE_BAD (labeled bad) or ROUTE_GOOD (labeled good)


def draw_story(seed: int, index: int, caps_frac: float, labeled_bad_frac: float,
               labeled_good_frac: float) -> StoryDraw:
    if uniform_draw(seed, index, "caps") < caps_frac:
        labeled = uniform_draw(seed, index, "labeled_bad") < labeled_bad_frac
        return StoryDraw(True, ROUTE_BAD if labeled else ROUTE_BOTH)
    labeled_good = uniform_draw(seed, index, "labeled_good") < labeled_good_frac
    return StoryDraw(False, ROUTE_GOOD if labeled_good else ROUTE_BOTH)


def is_caps(text: str) -> bool:
    """At least MIN_LETTERS letters, of which at least 80 % are uppercase."""
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= MIN_LETTERS and sum(c.isupper() for c in letters) >= MIN_UPPER_FRAC * len(letters)


def opening(story: str, n_words: int = 3) -> str:
    return " ".join(story.split()[:n_words])


def read_stories(path: str | Path) -> list[str]:
    """Stories from a JSONL file: a `story` or `text` field per line (SimpleStories uses `story`)."""
    stories = []
    for where, record in read_jsonl(path, "story"):
        text = next((record[k] for k in TEXT_FIELDS if isinstance(record, dict) and isinstance(record.get(k), str)),
                    None)
        if text is None:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise UsageError(f"{where}: no 'story' or 'text' field (got {keys})")
        stories.append(text)
    return stories
