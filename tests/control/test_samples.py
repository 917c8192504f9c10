import gzip
import json
from pathlib import Path

import pytest

from tunelens.config import UsageError
from tunelens.control.data import DATA_DIR, sad_prompts, sad_words
from tunelens.control.samples import (
    CASES,
    check_cases,
    default_samples,
    expand,
    sad_draws,
    sad_samples,
    split_words,
)

FIXTURE = Path(__file__).parent / "data" / "rng_draws.json.gz"  # shared/data/output_control/fixtures, compressed


def fixture() -> dict:
    with gzip.open(FIXTURE, "rt") as handle:
        return json.load(handle)


def test_the_word_list_is_sads_and_shipped_compressed():
    words = sad_words()
    assert len(words) == 3183 and words[:3] == ("A", "a", "aa")
    for path in DATA_DIR.iterdir():
        if path.suffix != ".md":
            assert path.name.endswith(".gz") and path.read_bytes()[:2] == b"\x1f\x8b", path  # gzip magic
    first_pair = fixture()["sad_n10"]["word_pairs"][0]
    assert not [w for w in first_pair if f" {w} " in (DATA_DIR / "README.md").read_text()]
    assert sad_prompts()["prefill"] == "My answer is:"  # no trailing space, as SAD


def test_sad_draws_reproduce_sad_and_logit_control_exactly():
    expected = fixture()
    sad = sad_draws(sad_words(), 10)
    assert [list(p) for p in sad.word_pairs] == expected["sad_n10"]["word_pairs"]
    assert sad.random_words_seeds == expected["sad_n10"]["not_given_seeds"]
    for n in (10, 25, 50):
        draws = sad_draws(sad_words(), n)
        reference = expected["logit_control_b2240ae"][f"n{n}"]
        assert [list(p) for p in draws.word_pairs] == reference["word_pairs"]
        assert draws.random_words_seeds == reference["random_words_seeds"]
        assert draws.icl_random_words_seeds == reference["icl_random_words_seeds"]


def test_each_item_makes_the_ten_samples_of_the_grid():
    samples = sad_samples(sad_words(), 10)
    assert len(samples) == 300  # 3 cases x 10 items x 5 p x 2 r
    given = [s for s in samples if s.case == "given_words"]
    first = [(s.p, s.q, s.r) for s in given if s.item == 0]
    assert first == [(p, 100 - p, r) for p in (30, 40, 50, 60, 70) for r in (10, 20)]
    assert list(given[0].words) == fixture()["sad_n10"]["word_pairs"][0]
    random_first = [s for s in samples if s.case == "random_words"][0]
    assert random_first.seed == fixture()["sad_n10"]["not_given_seeds"][0] and random_first.word1 is None
    icl = [s for s in samples if s.case == "icl_random_words"]
    assert {s.seed for s in icl} == set(fixture()["logit_control_b2240ae"]["n10"]["icl_random_words_seeds"])
    assert len(expand("random_words", [1, 2, 3])) == 30


def test_training_and_evaluation_share_no_word_pair_or_seed():
    train_words, eval_words = split_words(sad_words(), 0.5, seed=0)
    assert not set(train_words) & set(eval_words)
    assert len(train_words) + len(eval_words) == len(set(sad_words()))
    train = default_samples(train_words, 50, "train", seed=0)
    held_out = default_samples(eval_words, 10, "eval", seed=0)
    train_given = [s for s in train if s.is_given]
    eval_given = [s for s in held_out if s.is_given]
    assert not {w for s in train_given for w in s.words} & {w for s in eval_given for w in s.words}
    assert all(s.word1 != s.word2 for s in train_given + eval_given)
    train_seeds = {s.seed for s in train if not s.is_given}
    eval_seeds = {s.seed for s in held_out if not s.is_given}
    assert train_seeds and eval_seeds and not train_seeds & eval_seeds
    assert all(100_000_000 <= s <= 999_999_999 for s in train_seeds | eval_seeds)
    assert len(held_out) == 3 * 10 * 10
    assert default_samples(eval_words, 10, "eval", seed=0) == held_out  # seeded


def test_the_split_does_not_depend_on_the_tokenizer_or_the_filtering():
    train_words, eval_words = split_words(sad_words(), 0.5, seed=0)
    assert split_words(sad_words(), 0.5, seed=0) == (train_words, eval_words)
    assert split_words(sad_words(), 0.5, seed=1) != (train_words, eval_words)


def test_an_unknown_case_is_one_clear_error():
    assert check_cases(["given_words"]) == ["given_words"]
    with pytest.raises(UsageError, match="unknown case 'gven_words' \\(known: given_words, random_words, "
                                         "icl_random_words\\)"):
        check_cases(["gven_words"])
    assert CASES == ("given_words", "random_words", "icl_random_words")


def test_too_few_words_for_the_pairs_asked_for():
    with pytest.raises(UsageError, match="only 2 ordered pair"):
        default_samples(["cat", "dog"], 3, "eval", seed=0, cases=["given_words"])
