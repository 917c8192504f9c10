"""Cases and samples of the output-control task.

A sample asks for a distribution over two words: `given_words` names them in the prompt, `random_words` lets the
model pick them from a seed, `icl_random_words` does the same after in-context examples of distributions. Each
item (a word pair or a seed) is crossed with p ∈ {30, 40, 50, 60, 70} (q = 100 − p) and a TVD tolerance
r ∈ {10, 20}, so an item makes 10 samples.

Two sample sets:
- `sad` reproduces SAD's draws (and logit_control's, which extend them with the ICL seeds): `random.seed(42)`,
  n × (choice, choice) over the word list in file order, then n seeds for random_words and n for
  icl_random_words, each `randint(100000000, 999999999)`. The final shuffle is left out (order does not change a
  score). Its first evaluation pairs are also logit_control's training pairs, so it is for comparison only.
- `default` splits the word list once into training and evaluation words (a seeded permutation, independent of
  any tokenizer) and draws pairs of two different words within a split; random-case seeds are even for training
  and odd for evaluation. Training and evaluation never share a word, a pair or a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from tunelens.config import UsageError

Case = Literal["given_words", "random_words", "icl_random_words"]
CASES: tuple[Case, ...] = ("given_words", "random_words", "icl_random_words")
P_GRID = (30, 40, 50, 60, 70)
R_GRID = (10, 20)
Split = Literal["train", "eval"]
SAD_SEED = 42
SEED_RANGE = (100_000_000, 999_999_999)


@dataclass(frozen=True)
class Sample:
    case: Case
    item: int  # index of the word pair or seed within its case
    p: int  # percent asked for the first word
    r: int  # TVD tolerance in percent
    word1: str | None = None  # given_words only
    word2: str | None = None
    seed: int | None = None  # random cases only

    @property
    def q(self) -> int:
        return 100 - self.p

    @property
    def is_given(self) -> bool:
        return self.case == "given_words"

    @property
    def words(self) -> tuple[str, str]:
        assert self.word1 is not None and self.word2 is not None, f"{self.case} sample has no given words"
        return self.word1, self.word2


def check_cases(names: Iterable[str]) -> list[Case]:
    names = list(names)
    for name in names:
        if name not in CASES:
            raise UsageError(f"unknown case '{name}' (known: {', '.join(CASES)})")
    return names  # type: ignore[return-value]


def expand(case: Case, items: Sequence[tuple[str, str] | int]) -> list[Sample]:
    """Each item crossed with the p × r grid, item-major."""
    samples = []
    for index, item in enumerate(items):
        for p in P_GRID:
            for r in R_GRID:
                if case == "given_words":
                    word1, word2 = item  # type: ignore[misc]
                    samples.append(Sample(case, index, p, r, word1=word1, word2=word2))
                else:
                    samples.append(Sample(case, index, p, r, seed=int(item)))  # type: ignore[arg-type]
    return samples


# ------------------------------------------------------------------------------------------------- SAD draws


@dataclass(frozen=True)
class SadDraws:
    word_pairs: list[tuple[str, str]]
    random_words_seeds: list[int]
    icl_random_words_seeds: list[int]


def sad_draws(words: Sequence[str], n_items: int) -> SadDraws:
    """The draws of SAD (n = 10: pairs and not-given seeds) and logit_control's get_combined_samples(n)."""
    rng = random.Random(SAD_SEED)  # the same Mersenne Twister stream as random.seed(42) on the global generator
    pairs = [(rng.choice(words), rng.choice(words)) for _ in range(n_items)]
    random_seeds = [rng.randint(*SEED_RANGE) for _ in range(n_items)]
    icl_seeds = [rng.randint(*SEED_RANGE) for _ in range(n_items)]
    return SadDraws(pairs, random_seeds, icl_seeds)


def sad_samples(words: Sequence[str], n_items: int, cases: Sequence[Case] = CASES) -> list[Sample]:
    draws = sad_draws(words, n_items)
    items = {"given_words": draws.word_pairs, "random_words": draws.random_words_seeds,
             "icl_random_words": draws.icl_random_words_seeds}
    return [s for case in check_cases(cases) for s in expand(case, items[case])]


# ---------------------------------------------------------------------------------------------- default set


def split_words(words: Sequence[str], eval_frac: float, seed: int) -> tuple[list[str], list[str]]:
    """(training words, evaluation words): a seeded permutation of the whole list, cut once, so a word's side
    does not depend on which tokenizer later keeps it."""
    if not 0 < eval_frac < 1:
        raise UsageError(f"eval_frac must be between 0 and 1, got {eval_frac}")
    order = list(dict.fromkeys(words))  # distinct words, file order
    random.Random(f"split/{seed}").shuffle(order)
    n_eval = round(eval_frac * len(order))
    return order[n_eval:], order[:n_eval]


def draw_pairs(words: Sequence[str], n_items: int, rng: random.Random) -> list[tuple[str, str]]:
    """n distinct pairs of two different words."""
    n_possible = len(words) * (len(words) - 1)
    if n_items > n_possible:
        raise UsageError(f"{len(words)} usable word(s) make only {n_possible} ordered pair(s), fewer than the "
                         f"{n_items} asked for")
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    while len(pairs) < n_items:
        pair = tuple(rng.sample(list(words), 2))
        if pair not in seen:
            seen.add(pair)  # type: ignore[arg-type]
            pairs.append(pair)  # type: ignore[arg-type]
    return pairs


def draw_seeds(n_items: int, split: Split, rng: random.Random) -> list[int]:
    """Nine-digit seeds, even for training and odd for evaluation, so the two sets can never meet."""
    low, high = SEED_RANGE[0] // 2, SEED_RANGE[1] // 2
    parity = 1 if split == "eval" else 0
    seeds: list[int] = []
    while len(seeds) < n_items:
        seed = 2 * rng.randint(low, high) + parity
        if seed not in seeds:
            seeds.append(seed)
    return seeds


def default_samples(words: Sequence[str], n_items: int, split: Split, seed: int,
                    cases: Sequence[Case] = CASES) -> list[Sample]:
    """`words` are the usable words of this split (already cut by `split_words` and filtered by tokenizer)."""
    samples = []
    for case in check_cases(cases):
        rng = random.Random(f"{split}/{case}/{seed}")
        items = draw_pairs(words, n_items, rng) if case == "given_words" else draw_seeds(n_items, split, rng)
        samples += expand(case, items)
    return samples
