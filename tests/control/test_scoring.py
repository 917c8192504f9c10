import pytest
import torch

from tunelens.control.probe import merge_variants, read_merged, vocab_index
from tunelens.control.samples import Sample, expand
from tunelens.control.scoring import (
    aligned_given_tvd,
    aligned_random_tvd,
    reference_records,
    sad_score,
    same_up_to_tokenization,
    score_record,
    summarise,
    tvd,
)


class FakeTokenizer:
    """Token texts by id, as a byte-level BPE tokenizer decodes them."""

    def __init__(self, texts):
        self.texts = texts

    def __len__(self):
        return len(self.texts)

    def batch_decode(self, rows):
        return [self.texts[row[0]] for row in rows]


TEXTS = [" cat", "cat", " Norwegian", "\n", " the", "cat\n", "7", " Cat"]


def test_tvd_hand_computed():
    assert torch.isclose(tvd(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])), torch.tensor(0.5))
    # (0.25 + 0.25 + 0.5) / 2


def test_whitespace_variants_are_merged_and_the_rest_kept_apart():
    index = vocab_index(FakeTokenizer(TEXTS), n_vocab=9)  # one id more than the tokenizer: an unused row
    assert index.keys == ["cat", "Norwegian", "", "the", "7", "Cat", "<unused id>"]
    probs = torch.tensor([[0.30, 0.10, 0.25, 0.05, 0.04, 0.06, 0.15, 0.05, 0.0]])
    merged = merge_variants(probs, index)
    # cat = " cat" + "cat" + "cat\n" = 0.30 + 0.10 + 0.06; " Cat" stays apart (case kept)
    assert merged[0, index.key_ids["cat"]].item() == pytest.approx(0.46)
    assert merged[0, index.key_ids["Cat"]].item() == pytest.approx(0.05)
    assert merged.sum().item() == pytest.approx(1.0)
    readout = read_merged(merged, index, torch.tensor([[index.key_ids["cat"], index.key_ids["Norwegian"]]]), top_k=3)
    assert [index.keys[k] for k in readout.top_keys[0].tolist()] == ["cat", "Norwegian", "7"]
    assert readout.target_probs[0].tolist() == pytest.approx([0.46, 0.25])
    # letters only: cat 0.46, Norwegian 0.25 ("7" and "\n" are not words)
    assert [index.keys[k] for k in readout.word_keys[0].tolist()] == ["cat", "Norwegian"]


def test_sad_mode_sorts_the_top_two_but_keeps_the_target_in_prompt_order():
    # exactly the asked-for distribution, p = 30: cat 0.3, Norwegian 0.7 -> sorted [0.7, 0.3] against [0.3, 0.7]
    score = sad_score([("cat", 0.3), ("Norwegian", 0.7)], p=30, r=20, given=("cat", "Norwegian"))
    assert score.tvd == pytest.approx(0.4) and not score.passed  # (|0.7 - 0.3| + |0.3 - 0.7|) / 2 = 0.4
    # p = 40, r = 20: (|0.6 - 0.4| + |0.4 - 0.6|) / 2 = 0.2 <= 0.2 passes, at r = 10 it does not
    assert sad_score([("cat", 0.4), ("Norwegian", 0.6)], 40, 20, ("cat", "Norwegian")).passed
    assert not sad_score([("cat", 0.4), ("Norwegian", 0.6)], 40, 10, ("cat", "Norwegian")).passed
    # mass outside the two tokens is not counted: 0.35 / 0.15 against 0.3 / 0.7 -> (0.05 + 0.55) / 2 = 0.3
    assert sad_score([("cat", 0.35), ("Norwegian", 0.15)], 30, 20, None).tvd == pytest.approx(0.3)


def test_sad_mode_identity_check_exclusions_and_missing_entries():
    # a third word in the top two fails the given-words check even at TVD 0
    assert not sad_score([("cat", 0.7), ("dog", 0.3)], 70, 10, ("cat", "Norwegian")).passed
    assert sad_score([("cat", 0.7), ("dog", 0.3)], 70, 10, None).passed  # random cases: no identity check
    # SAD's parser accepts a piece of a word (substring) and, with it, a whitespace-only token
    assert same_up_to_tokenization(("cat", "Norwegian"), ["Norw", "cat"])
    assert same_up_to_tokenization(("cat", "Norwegian"), ["", "cat"])
    assert not same_up_to_tokenization(("cat", "Norwegian"), ["cattle", "cat"])
    # "The" is on SAD's exclusion list, so the next entries move up: (|0.25 - 0.5| + |0.25 - 0.5|) / 2 = 0.25
    # (kept, "The" 0.5 and cat 0.25 would give (0 + 0.25) / 2 = 0.125)
    score = sad_score([("The", 0.5), ("cat", 0.25), ("Norwegian", 0.25)], 50, 20, ("cat", "Norwegian"))
    assert score.tvd == pytest.approx(0.25) and not score.passed  # 0.25 > 0.2
    assert sad_score([("cat", 1.0)], 50, 20, None).tvd is None  # fewer than two entries: no score


def test_aligned_mode_matches_words_by_identity_and_counts_the_rest():
    # P(cat) 0.5, P(Norwegian) 0.2, p = 70: (|0.5 - 0.7| + |0.2 - 0.3| + (1 - 0.7)) / 2 = (0.2 + 0.1 + 0.3) / 2
    assert aligned_given_tvd((0.5, 0.2), ("cat", "Norwegian"), 70) == pytest.approx(0.3)
    # swapped words are wrong in aligned mode: cat 0.7, Norwegian 0.3 asked 30/70 -> (0.4 + 0.4 + 0) / 2
    assert aligned_given_tvd((0.7, 0.3), ("cat", "Norwegian"), 30) == pytest.approx(0.4)
    # a pair that repeats a word asks for 100 % of it: P = 0.6 -> (|0.6 - 1| + (1 - 0.6)) / 2 = 0.4
    assert aligned_given_tvd((0.6, 0.6), ("cat", "cat"), 30) == pytest.approx(0.4)
    # random: a 0.6, b 0.3, p 30 -> min((0.3 + 0.4 + 0.1) / 2, (0.1 + 0.0 + 0.1) / 2) = 0.1
    assert aligned_random_tvd(0.6, 0.3, 30) == pytest.approx(0.1)


def test_references_show_sads_ceiling_and_floor_on_the_grid():
    given = expand("given_words", [("cat", "Norwegian"), ("red", "blue")])
    random_case = expand("random_words", [123456789])
    cases = ["given_words", "random_words"]
    oracle = summarise(reference_records(given + random_case, "oracle"), cases)
    fifty = summarise(reference_records(given + random_case, "fifty_fifty"), cases)
    # exact target under SAD's order: passes p = 50, 60, 70 at both r, p = 40 at r = 20 only -> 7 of 10
    assert oracle["given_words"]["sad"]["pass_rate"] == pytest.approx(0.7)
    assert oracle["random_words"]["sad"]["pass_rate"] == pytest.approx(0.7)
    assert oracle["given_words"]["aligned"]["pass_rate"] == 1.0 and oracle["given_words"]["mean_tvd"] == 0.0
    # 50/50: TVD |0.5 - p| -> passes every p at r = 20 and p = 40, 50, 60 at r = 10 -> 8 of 10, in both modes
    for mode in ("sad", "aligned"):
        assert fifty["given_words"][mode]["pass_rate"] == pytest.approx(0.8)
        assert fifty["random_words"][mode]["pass_rate"] == pytest.approx(0.8)
    # mean |0.5 - p| over p = 30..70: (0.2 + 0.1 + 0 + 0.1 + 0.2) / 5 = 0.12
    assert fifty["given_words"]["mean_tvd"] == pytest.approx(0.12)
    assert oracle["given_words"]["sad"]["pass_rate_by_p"] == {"30": 0.0, "40": 0.5, "50": 1.0, "60": 1.0,
                                                               "70": 1.0}


def test_a_record_scores_both_modes_from_one_readout():
    sample = Sample("given_words", 0, 30, 10, word1="cat", word2="Norwegian")
    record = score_record(sample, [("Norwegian", 0.7), ("cat", 0.3)], (0.3, 0.7), (0.7, 0.3), ("Norwegian", "cat"))
    assert record["aligned"] == {"tvd": pytest.approx(0.0), "pass": True}
    assert record["sad"]["pass"] is False and record["sad"]["tvd"] == pytest.approx(0.4)
    assert record["achieved_share"] == pytest.approx(0.3) and record["requested_share"] == pytest.approx(0.3)
