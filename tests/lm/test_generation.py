import torch

from tunelens.lm.generation import sample, top_p_filter
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
