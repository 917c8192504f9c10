import pytest
import torch

from tunelens.lm import prefix
from tunelens.lm.batching import pad_batch
from tunelens.lm.prefix import PrefixGroup, common_prefix, next_token_probs_batches, plan_groups, planned_positions
from tunelens.lm.scoring import next_token_probs


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1], [2]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_plan_by_hand():
    """Sorted: [1,2,3,4] [1,2,3,5] [1,2,9] [7,8]; adjacent common prefixes 3, 2, 0. Alone: 13 positions.
    {0,1,2} sharing 2 costs 2 + 2 + 2 + 1 = 7, {0,1} sharing 3 then {2} alone 5 + 3 = 8: the first wins."""
    prompts = [[1, 2, 9], [7, 8], [1, 2, 3, 5], [1, 2, 3, 4]]
    groups = plan_groups(prompts)
    assert groups == [PrefixGroup(2, (3, 2, 0)), PrefixGroup(0, (1,))]
    assert planned_positions(prompts, groups) == 9
    # At most two per group: {0,1} sharing 3 (5) + {2} (3) + {3} (2) = 10 beats {0} (4) + {1,2} sharing 2 (5) + 2.
    groups = plan_groups(prompts, max_group=2)
    assert groups == [PrefixGroup(3, (3, 2)), PrefixGroup(0, (0,)), PrefixGroup(0, (1,))]
    assert planned_positions(prompts, groups) == 10


def test_a_member_keeps_its_last_token():
    """The distribution is read in the suffix pass, so the shared prefix stops one short of the shortest member."""
    assert plan_groups([[5, 6], [5, 6, 7]]) == [PrefixGroup(1, (0, 1))]
    assert plan_groups([[5, 6], [5, 6]]) == [PrefixGroup(1, (0, 1))]
    assert plan_groups([[4], [4, 5]]) == [PrefixGroup(0, (0,)), PrefixGroup(0, (1,))]
    with pytest.raises(ValueError, match="at least one token"):
        plan_groups([[1], []])


def _prompts(tokenizer):
    head = "Once upon a time there was a little girl who liked to play in the park with her dog."
    texts = [f"{head} One day she saw a {w}" for w in ("cat", "big red ball", "tree")]
    texts += [f"{head} The dog was {w}" for w in ("happy", "very very sad", "tired")]
    texts += ["Tom had a box.", "Tom had a big box of toys.", "The sun was hot."]
    return tokenizer(texts)["input_ids"]


@pytest.mark.parametrize("batch_size", [2, 4, 32])
def test_shared_prefixes_give_each_prompt_its_own_distribution(micro_lm, batch_size):
    from tunelens.lm.loading import load_model, load_tokenizer

    folder, _ = micro_lm
    model, tokenizer = load_model(folder), load_tokenizer(folder, padding_side="left")
    prompts = _prompts(tokenizer)
    groups = plan_groups(prompts, max_group=batch_size)
    assert any(g.prefix_len > 10 for g in groups)  # the plan shares something
    assert planned_positions(prompts, groups) < sum(map(len, prompts))
    alone = torch.cat([next_token_probs(model, *pad_batch([p], tokenizer.pad_token_id, side="left"))
                       for p in prompts])
    seen = []
    for rows, probs in next_token_probs_batches(model, prompts, tokenizer.pad_token_id, batch_size=batch_size):
        assert len(rows) <= batch_size
        seen += rows
        torch.testing.assert_close(probs, alone[rows], atol=2e-6, rtol=1e-4)
    assert sorted(seen) == list(range(len(prompts)))


def _by_row(batches) -> dict[int, torch.Tensor]:
    return {row: p for rows, probs in batches for row, p in zip(rows, probs)}


def test_a_cache_that_cannot_be_shared_falls_back_to_whole_prompts(micro_lm, monkeypatch):
    from tunelens.lm.loading import load_model, load_tokenizer

    folder, _ = micro_lm
    model, tokenizer = load_model(folder), load_tokenizer(folder, padding_side="left")
    prompts = _prompts(tokenizer)
    monkeypatch.setattr(prefix, "_shares_prefixes", lambda cache: False)
    shared = _by_row(next_token_probs_batches(model, prompts, tokenizer.pad_token_id, batch_size=4))
    plain = _by_row(next_token_probs_batches(model, prompts, tokenizer.pad_token_id, batch_size=4,
                                             share_prefixes=False))
    assert sorted(shared) == sorted(plain) == list(range(len(prompts)))
    for row in plain:
        torch.testing.assert_close(shared[row], plain[row], atol=2e-6, rtol=1e-4)
