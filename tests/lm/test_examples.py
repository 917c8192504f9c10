import json

import pytest

from tunelens.config import UsageError
from tunelens.lm.examples import Example, collate, encode_prompt, read_examples, render_chat, tokenize_example
from tunelens.lm.loading import load_tokenizer

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


def test_reading_prompt_completion_and_text_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "Q", "completion": " A", "label": "bad"}\n\n{"text": "a story"}\n')
    first, second = read_examples(path)
    assert first == Example("Q", " A", {"label": "bad"}) and second == Example("", "a story", {})


@pytest.mark.parametrize("line, fragment", [
    ("{not json", "data.jsonl:2: not valid JSON"),
    ('{"prompt": "Q"}', "data.jsonl:2: 'completion' must be a string"),
    ('{"story": "x"}', "needs 'prompt' and 'completion'"),
    ('[1, 2]', "expected a JSON object"),
])
def test_a_malformed_line_names_its_file_and_line(tmp_path, line, fragment):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(UsageError, match=fragment.replace("[", r"\[")):
        read_examples(path)
    with pytest.raises(UsageError, match="not found"):
        read_examples(tmp_path / "missing.jsonl")


def test_completion_mask_covers_the_completion_and_eos(micro_lm):
    tokenizer = load_tokenizer(micro_lm[0], padding_side="right")
    example = Example("Who is it? Answer:", " Mia.")
    row = tokenize_example(tokenizer, example, index=7)
    prompt_ids = tokenizer(example.prompt)["input_ids"]
    completion_ids = tokenizer(" Mia.", add_special_tokens=False)["input_ids"]
    assert prompt_ids[0] == tokenizer.bos_token_id
    assert row.input_ids == prompt_ids + completion_ids + [tokenizer.eos_token_id]
    assert row.loss_mask == [0] * len(prompt_ids) + [1] * (len(completion_ids) + 1)
    assert row.index == 7 and row.n_prompt_tokens == len(prompt_ids)
    everything = tokenize_example(tokenizer, example, index=7, loss_on="all")
    assert everything.input_ids == row.input_ids and all(everything.loss_mask)
    plain = tokenize_example(tokenizer, Example("", "One day."), index=0)
    assert plain.input_ids == tokenizer("One day.")["input_ids"] + [tokenizer.eos_token_id]


def test_rows_stay_separate_and_padding_is_masked(micro_lm):
    tokenizer = load_tokenizer(micro_lm[0], padding_side="right")
    rows = [tokenize_example(tokenizer, Example("A long prompt here", " yes"), 0),
            tokenize_example(tokenizer, Example("Hi", " no"), 1)]
    batch = collate(rows, tokenizer.pad_token_id)
    assert batch.input_ids.shape[0] == 2 and batch.index.tolist() == [0, 1]
    short = len(rows[1].input_ids)
    assert batch.attention_mask[1, short:].sum() == 0 and batch.loss_mask[1, short:].sum() == 0


def test_a_row_with_nothing_to_learn_is_an_error(micro_lm):
    tokenizer = load_tokenizer(micro_lm[0], padding_side="right")
    with pytest.raises(UsageError, match="no token to compute a loss on"):
        tokenize_example(tokenizer, Example("a prompt that is far too long for the limit", " x"), 3, max_len=4)


def test_chat_template_with_a_prefill_continues_the_assistant_turn(micro_lm):
    tokenizer = load_tokenizer(micro_lm[0], padding_side="right")
    with pytest.raises(UsageError, match="no chat template"):
        encode_prompt(tokenizer, "Pick a word.", chat="always")
    tokenizer.chat_template = TEMPLATE
    opened = render_chat(tokenizer, "Pick a word.")
    assert opened == "user: Pick a word.\nassistant:"
    continued = render_chat(tokenizer, "Pick a word.", system="Be brief.", prefill="My answer is:")
    assert continued == "system: Be brief.\nuser: Pick a word.\nassistant: My answer is:"  # not closed by "\n"
    ids = encode_prompt(tokenizer, "Pick a word.", chat="auto", prefill="My answer is:")
    assert tokenizer.decode(ids) == "user: Pick a word.\nassistant: My answer is:"
    assert encode_prompt(tokenizer, "Pick a word.", chat="never") == tokenizer("Pick a word.")["input_ids"]
    json.dumps(ids)  # plain ints
