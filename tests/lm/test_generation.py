import pytest
import torch

from tunelens.lm.generation import next_tokens, sample, top_p_filter
from tunelens.lm.loading import load_model, load_tokenizer


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 <= 0.5 + 0.3
    assert torch.isfinite(top_p_filter(logits, 0.1)).sum() == 1
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def greedy_without_cache(model, tokenizer, prompt: str, n_new: int) -> str:
    """Slow reference: the whole sequence through the model at every step."""
    ids = tokenizer(prompt)["input_ids"]
    new: list[int] = []
    for _ in range(n_new):
        token = model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax().item()
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
    return tokenizer.decode(new)


def test_batched_greedy_sampling_matches_one_at_a_time_without_cache(micro_lm):
    folder, _ = micro_lm
    model, tokenizer = load_model(folder), load_tokenizer(folder, padding_side="left")
    prompts = ["Once upon a time, in a big green", "Mia", "The sky turned gray, and"]
    together = sample(model, tokenizer, prompts, max_new_tokens=12, temperature=0)
    assert together == [greedy_without_cache(model, tokenizer, p, 12) for p in prompts]


def test_seeded_sampling_is_reproducible(micro_lm):
    folder, _ = micro_lm
    model, tokenizer = load_model(folder), load_tokenizer(folder, padding_side="left")

    def draw(seed: int) -> list[str]:
        return sample(model, tokenizer, ["Leo", "One day,"], max_new_tokens=10, temperature=1.0, top_p=0.9,
                      generator=torch.Generator().manual_seed(seed))

    assert draw(0) == draw(0) and all(draw(0))
    assert draw(0) != draw(1)  # really sampled: a greedy decoder would give the same text for every seed


def test_temperature_draws_follow_the_tempered_distribution():
    # p = (0.5, 0.3, 0.2); at temperature 2 the logits halve, so q is proportional to sqrt(p)
    probs = torch.tensor([0.5, 0.3, 0.2])
    logits = probs.log().expand(40_000, 3)
    draws = next_tokens(logits, temperature=2.0, top_p=1.0, generator=torch.Generator().manual_seed(0))
    expected = probs.sqrt() / probs.sqrt().sum()  # (0.414, 0.321, 0.262)
    observed = torch.bincount(draws, minlength=3) / len(draws)
    assert torch.allclose(observed, expected, atol=0.01)  # standard error about 0.0025


def test_top_p_draws_only_from_the_nucleus_in_proportion():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    draws = next_tokens(probs.log().expand(40_000, 4), temperature=1.0, top_p=0.7,
                        generator=torch.Generator().manual_seed(0))
    observed = torch.bincount(draws, minlength=4) / len(draws)
    assert observed[2:].sum() == 0  # outside the nucleus {0, 1}
    assert torch.allclose(observed[:2], torch.tensor([0.625, 0.375]), atol=0.01)  # 0.5 / 0.8 and 0.3 / 0.8


def test_stop_strings_end_a_row_and_are_cut(micro_lm):
    folder, _ = micro_lm
    model, tokenizer = load_model(folder), load_tokenizer(folder, padding_side="left")
    prompts = ["Once upon a time, in a big green", "Mia"]
    free = sample(model, tokenizer, prompts, max_new_tokens=30, temperature=0)
    stopped = sample(model, tokenizer, prompts, max_new_tokens=30, temperature=0, stop=[".", ","])
    for text, cut in zip(free, stopped):
        assert "." not in cut and "," not in cut
        assert text.startswith(cut)
        ends = [text.index(s) for s in ".," if s in text]
        assert len(cut) == (min(ends) if ends else len(text))


def test_sample_batched_is_sample_over_slices(micro_lm):
    from tunelens.lm.generation import sample, sample_batched
    from tunelens.lm.loading import load_model, load_tokenizer

    model = load_model(micro_lm[0]).eval()
    tokenizer = load_tokenizer(micro_lm[0], padding_side="left")
    prompts = ["Once upon a time", "The cat", "A dog ran", "She said"]
    batched = sample_batched(model, tokenizer, 3, prompts, max_new_tokens=5,
                             generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    by_hand = [*sample(model, tokenizer, prompts[:3], max_new_tokens=5, generator=generator),
               *sample(model, tokenizer, prompts[3:], max_new_tokens=5, generator=generator)]
    assert batched == by_hand and len(batched) == 4
    with pytest.raises(ValueError, match="either prompts or prompt_ids"):
        sample_batched(model, tokenizer, 2)
