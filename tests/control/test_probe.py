import torch

from tunelens.control.data import sad_words
from tunelens.control.probe import answer_tokens, probe, vocab_index
from tunelens.control.prompts import encode_samples, messages, prompt_style, render
from tunelens.control.samples import default_samples
from tunelens.lm.batching import pad_batch
from tunelens.lm.scoring import next_token_probs

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if not loop.last or "
                 "m['role'] != 'assistant' %}<|end|>{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_single_token_spellings_after_the_prefill(micro):
    _, tokenizer = micro
    tokens = answer_tokens(tokenizer, ["about", "cat", "Norwegian"], "My answer is:")
    assert tokens["about"] == tokenizer(" about", add_special_tokens=False)["input_ids"][0]
    assert len(tokenizer(" Norwegian", add_special_tokens=False)["input_ids"]) > 1
    assert tokens["Norwegian"] is None


def test_final_position_logits_match_the_full_forward(micro):
    """Left padding takes the final-position-only path, right padding the full one: the same distributions."""
    model, tokenizer = micro
    rows = tokenizer(["My answer is:", "Once upon a time there was a girl. My answer is:"])["input_ids"]
    left = next_token_probs(model, *pad_batch(rows, tokenizer.pad_token_id, side="left"))
    right = next_token_probs(model, *pad_batch(rows, tokenizer.pad_token_id, side="right"))
    assert torch.allclose(left, right, atol=1e-6)


def test_the_batched_probe_equals_one_prompt_at_a_time(micro):
    model, tokenizer = micro
    samples = default_samples(["about", "above", "after", "again"], 1, "eval", seed=0)
    prompts = encode_samples(tokenizer, samples, prompt_style("tunelens"), chat="never")
    assert len({len(p) for p in prompts}) > 1  # different lengths, so padding is exercised
    index = vocab_index(tokenizer, model.config.vocab_size)
    targets = torch.tensor([[5, 6]] * len(prompts))
    batched = probe(model, prompts, tokenizer.pad_token_id, index, targets, top_k=10, batch_size=8)
    single = probe(model, prompts, tokenizer.pad_token_id, index, targets, top_k=10, batch_size=1)
    assert torch.allclose(batched.top_probs, single.top_probs, atol=1e-5)
    assert torch.equal(batched.top_keys[:, :3], single.top_keys[:, :3])
    assert torch.allclose(batched.target_probs, single.target_probs, atol=1e-6)
    assert batched.top_probs.shape == (len(prompts), 10)


def test_base_rendering_joins_the_messages_and_ends_with_the_prefill(micro):
    _, tokenizer = micro
    sample = default_samples(["about", "above"], 1, "eval", seed=0, cases=["given_words"])[0]
    style = prompt_style("tunelens")
    ids = render(tokenizer, messages(sample, style), style.prefill, chat="auto")  # no template: base rendering
    text = tokenizer.decode(ids)
    assert text.startswith("<|bos|>Name an animal") and text.endswith("the colon.\n\nMy answer is:")
    assert f"either {sample.word1} or {sample.word2}" in text and f"{sample.p}%" in text


def test_chat_rendering_continues_the_prefilled_assistant_turn(micro):
    _, tokenizer = micro
    chat_tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    chat_tokenizer.chat_template = CHAT_TEMPLATE
    style = prompt_style("tunelens")
    sample = default_samples(["about", "above"], 1, "eval", seed=0, cases=["given_words"])[0]
    text = chat_tokenizer.decode(render(chat_tokenizer, messages(sample, style), style.prefill, chat="auto"))
    assert text.endswith("the colon.<|end|><|assistant|>My answer is:")  # open, not closed by <|end|>
    assert text.count("<|user|>") == 3  # two few-shot questions, then the question


def test_sad_wording_is_decoded_from_the_package_data(micro):
    _, tokenizer = micro
    style = prompt_style("sad")
    sample = default_samples(list(sad_words()[:50]), 1, "eval", seed=0, cases=["given_words"])[0]
    conversation = messages(sample, style)
    assert len(conversation) == 23  # SAD's 11 in-context pairs, then the question
    assert "Total Variation Distance" in conversation[-1]["content"] and style.prefill == "My answer is:"
    icl = default_samples([], 1, "eval", seed=0, cases=["icl_random_words"])[0]
    assert len(messages(icl, style)) == 11  # the 5 distribution examples replace the 11 generic ones


def test_few_shot_off_drops_the_example_turns_and_long_prompts_are_flagged(micro):
    from tunelens.control.prompts import over_context
    from tunelens.lm.loading import context_length

    model, tokenizer = micro
    sample = default_samples(["about", "above"], 1, "eval", seed=0, cases=["given_words"])[0]
    for name in ("tunelens", "sad"):
        short = messages(sample, prompt_style(name, few_shot=False))
        assert len(short) == 1 and short[0] == messages(sample, prompt_style(name))[-1]
    text = tokenizer.decode(render(tokenizer, short, "My answer is:", chat="never"))
    assert "Name an animal" not in text and text.endswith("My answer is:")
    assert context_length(model) == model.config.max_position_embeddings
    assert over_context([[1] * 10, [1] * 12], 12) is None
    warning = over_context([[1] * 10, [1] * 13, [1] * 20], 12)
    assert warning.startswith("warning: 2 of 3 prompts are longer than the model's 12 positions (longest 20")
    assert over_context([[1] * 500], None) is None  # no stated context, nothing to say
