"""What every ranker is handed, and the one interface they share.

A ranker is a function `score(data: AttributionData, options) -> Tensor[query, document]` (higher = more
responsible). `AttributionData` holds the corpus, the queries, the checkpoint pair (loaded on first use) and the
rows both sides are scored on, built once:

    document row = the document's tokens, every token in the loss (what training optimised)
    query row    = the prompt's tokens and the answer token, the loss on the answer only (the measurement)

Activations and gradients that several methods need are computed once per checkpoint and cached in memory
(`features`), batched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tunelens.attribution.corpus import Document, Function, FunctionPair, Query
from tunelens.lm.examples import TokenizedExample


@dataclass
class AttributionData:
    documents: list[Document]
    queries: list[Query]
    functions: list[Function] | list[FunctionPair]  # the corpus's functions (`corpus.functions_of`)
    old_path: str | Path
    new_path: str | Path
    device: torch.device = torch.device("cpu")
    batch_size: int = 64
    max_len: int = 256
    seed: int = 0
    work_dir: Path | None = None  # where libraries that keep files on disk (kronfluence, bergson) write them
    log: Callable[[str], None] = print
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- checkpoints
    def _load(self, side: str):
        key = f"model/{side}"
        if key not in self._cache:
            from tunelens.attribution.checkpoints import check_same_tokens, load_checkpoint
            from tunelens.attribution.corpus import function_tokens

            tokens = function_tokens(self.functions)
            old_model, old_tokenizer = load_checkpoint(self.old_path, tokens, self.device)
            new_model, new_tokenizer = load_checkpoint(self.new_path, tokens, self.device)
            check_same_tokens(old_tokenizer, new_tokenizer,
                              [d.text for d in self.documents[:50]] + [q.prompt for q in self.queries[:20]],
                              (str(self.old_path), str(self.new_path)))
            for model in (old_model, new_model):
                model.requires_grad_(False)
            self._cache.update({"model/old": old_model, "model/new": new_model, "tokenizer": new_tokenizer})
        return self._cache[key]

    @property
    def old(self):
        return self._load("old")

    @property
    def new(self):
        return self._load("new")

    @property
    def tokenizer(self):
        if "tokenizer" not in self._cache:
            from tunelens.lm.loading import load_tokenizer, resolve_name

            self._cache["tokenizer"] = load_tokenizer(resolve_name(str(self.new_path)), "right")
        return self._cache["tokenizer"]

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # -- rows
    def memo(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def document_rows(self) -> list[TokenizedExample]:
        from tunelens.attribution.train import document_rows

        return self.memo("rows/documents", lambda: document_rows(self.tokenizer, self.documents, self.max_len))

    def query_rows(self) -> list[TokenizedExample]:
        """Prompt tokens + the answer's token; the loss mask covers the answer only."""
        def build() -> list[TokenizedExample]:
            from tunelens.attribution.evaluate import candidate_token_ids

            answer_ids = candidate_token_ids(self.tokenizer, [q.answer for q in self.queries])
            rows = []
            for i, (query, answer) in enumerate(zip(self.queries, answer_ids)):
                prompt = self.tokenizer(query.prompt)["input_ids"]
                rows.append(TokenizedExample(prompt + [answer], [0] * len(prompt) + [1], i, len(prompt)))
            return rows

        return self.memo("rows/queries", build)

    def document_tokens(self) -> list[list[int]]:
        """Each document's token ids without special tokens (for the lexical methods)."""
        return self.memo("tokens/documents", lambda: [self.tokenizer(d.text, add_special_tokens=False)["input_ids"]
                                                      for d in self.documents])

    def query_tokens(self) -> list[list[int]]:
        return self.memo("tokens/queries", lambda: [self.tokenizer(q.prompt, add_special_tokens=False)["input_ids"]
                                                    for q in self.queries])

    def answer_ids(self) -> Tensor:
        return torch.tensor([row.input_ids[-1] for row in self.query_rows()])

    def candidate_ids(self) -> Tensor:
        from tunelens.attribution.evaluate import candidate_numbers, candidate_token_ids

        return torch.tensor(candidate_token_ids(self.tokenizer, candidate_numbers(self.functions)))


Scorer = Callable[[AttributionData, Any], Tensor]


def check_scores(scores: Tensor, data: AttributionData, method: str) -> Tensor:
    expected = (len(data.queries), len(data.documents))
    assert tuple(scores.shape) == expected, f"{method}: scores {tuple(scores.shape)}, expected {expected}"
    return scores.detach().float().cpu()


__all__ = ["AttributionData", "Scorer", "check_scores"]
