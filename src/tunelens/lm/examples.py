"""Training and evaluation examples: prompt/completion pairs or plain documents, tokenised one document per row.

A row is never merged with another document (attribution needs one row per document, and a loss mask per row
says which tokens count). The prompt is encoded with the tokenizer's own special tokens (BOS for Llama/OLMo-2
style tokenizers), or rendered through its chat template when it has one and `chat` asks for it; the completion
follows without special tokens, then EOS. Prompt and completion are encoded separately, so the boundary between
them is the same in training, scoring and generation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from tunelens.config import UsageError
from tunelens.lm.batching import pad_batch

LossOn = Literal["completion", "all"]
ChatMode = Literal["auto", "never", "always"]


@dataclass(frozen=True)
class Example:
    """One document. A plain text document is a completion with an empty prompt."""

    prompt: str
    completion: str
    meta: dict[str, Any] = field(default_factory=dict)  # any other fields of the JSONL line (labels, ids, ...)


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    loss_mask: list[int]  # 1 where the token is a target of the loss
    index: int  # position of the document in its source (its id for attribution)
    n_prompt_tokens: int


@dataclass
class Batch:
    """Right-padded rows; `index` maps each row back to its document."""

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    loss_mask: Int[Tensor, "batch seq"]
    index: Int[Tensor, "batch"]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.loss_mask, self.index)))

    def __len__(self) -> int:
        return len(self.index)


# ------------------------------------------------------------------------------------------------- reading


def parse_example(record: Any, where: str) -> Example:
    if not isinstance(record, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "prompt" in record or "completion" in record:
        missing = [k for k in ("prompt", "completion") if not isinstance(record.get(k), str)]
        if missing:
            raise UsageError(f"{where}: '{missing[0]}' must be a string (an example has 'prompt' and 'completion', "
                             "or 'text')")
        rest = {k: v for k, v in record.items() if k not in ("prompt", "completion")}
        return Example(record["prompt"], record["completion"], rest)
    if isinstance(record.get("text"), str):
        return Example("", record["text"], {k: v for k, v in record.items() if k != "text"})
    raise UsageError(f"{where}: an example needs 'prompt' and 'completion' (strings), or 'text'; got keys "
                     f"{sorted(record)}")


def read_jsonl(path: str | Path, what: str = "examples") -> list[tuple[str, Any]]:
    """(where, record) for every non-empty line of a JSONL file, `where` being "file:line" for error messages; a
    missing file, an unreadable line or an empty file is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} file not found: {path}")
    records = []
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise UsageError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    if not records:
        raise UsageError(f"{path}: no {what}")
    return records


def read_examples(path: str | Path) -> list[Example]:
    """Every line of a JSONL file; the first malformed line stops with its file and line number."""
    return [parse_example(record, where) for where, record in read_jsonl(path, "examples")]


# ---------------------------------------------------------------------------------------------- rendering


def uses_chat_template(tokenizer, chat: ChatMode) -> bool:
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if chat == "always" and not has_template:
        raise UsageError("chat=always, but the tokenizer has no chat template")
    return chat == "always" or (chat == "auto" and has_template)


def render_chat(tokenizer, prompt: str, system: str | None = None, prefill: str | None = None) -> str:
    """The prompt as a user turn; with a prefill, the assistant turn is opened with it and left open (the model
    continues the prefill instead of starting a fresh turn)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if prefill:
        messages.append({"role": "assistant", "content": prefill})
        return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_chat_messages(tokenizer, messages: Sequence[dict[str, str]], prefill: str | None = None) -> str:
    """A multi-turn conversation (e.g. few-shot user/assistant pairs, then the question) through the chat template;
    with a prefill, the final assistant turn is opened with it and left open, as in `render_chat`."""
    messages = list(messages)
    if prefill:
        return tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": prefill}], tokenize=False,
                                             continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt: str, chat: ChatMode = "never", system: str | None = None,
                  prefill: str | None = None) -> list[int]:
    """Token ids of a prompt as the model sees it before the completion (also what generation and scoring use)."""
    if uses_chat_template(tokenizer, chat):
        return tokenizer(render_chat(tokenizer, prompt, system, prefill), add_special_tokens=False)["input_ids"]
    return tokenizer(prompt + (prefill or ""))["input_ids"]


def tokenize_example(tokenizer, example: Example, index: int, loss_on: LossOn = "completion",
                     max_len: int | None = None,
                     chat: ChatMode = "never", system: str | None = None, append_eos: bool = True
                     ) -> TokenizedExample:
    """One row: prompt ids, then completion ids (+ EOS); the mask covers the completion, or every real token.

    A row longer than max_len is cut at the end; with the loss on the completion only, a cut that leaves no
    completion token is an error rather than a silent empty row."""
    # a plain document gets only the tokenizer's own leading special tokens (BOS), never a chat turn
    if example.prompt:
        prompt_ids = encode_prompt(tokenizer, example.prompt, chat, system)
    else:
        prompt_ids = tokenizer("")["input_ids"]
    completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    if append_eos and tokenizer.eos_token_id is not None:
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
    ids = [*prompt_ids, *completion_ids]
    if loss_on == "completion":
        mask = [0] * len(prompt_ids) + [1] * len(completion_ids)
    else:
        mask = [1] * len(ids)  # the first token is never a target: scoring reads mask[:, 1:]
    if max_len is not None and len(ids) > max_len:
        ids, mask = ids[:max_len], mask[:max_len]
    if sum(mask[1:]) == 0:
        raise UsageError(f"example {index}: no token to compute a loss on (empty completion, or the prompt fills "
                         f"max_len={max_len})")
    return TokenizedExample(ids, mask, index, len(prompt_ids))


def tokenize_examples(tokenizer, examples: Sequence[Example], **kwargs: Any) -> list[TokenizedExample]:
    return [tokenize_example(tokenizer, example, index, **kwargs) for index, example in enumerate(examples)]


def length_order(rows: Sequence[TokenizedExample]) -> list[int]:
    """Row positions, shortest first (stable): consecutive rows then need little padding."""
    return sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))


def batches_by_length(rows: Sequence[TokenizedExample], batch_size: int) -> list[list[int]]:
    """Row positions in batches of similar length (the order of `length_order`, cut every batch_size)."""
    order = length_order(rows)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(rows: Sequence[TokenizedExample], pad_id: int) -> Batch:
    ids, attention = pad_batch([r.input_ids for r in rows], pad_id, side="right")
    loss_mask, _ = pad_batch([r.loss_mask for r in rows], 0, side="right")
    return Batch(ids, attention, loss_mask, torch.tensor([r.index for r in rows]))
