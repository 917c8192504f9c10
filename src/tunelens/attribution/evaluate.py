"""The logit evaluation of the hops benchmark (the original's `logit_eval.py` protocol).

For every function token and x = 1..100 the prompt is `"<TOKEN>(x) returns the value "`. The prediction is the
arg-max of the last position's next-token distribution restricted to the candidate numbers (3..25: two below the
smallest constant to two above the largest), each number read through its first single-token spelling among
"n", " n", "n.", " n.". Confidence is the probability of the right number renormalised over the candidates.
Mode `depth0` asks the base functions, `hops` the wrappers (answerable only by composing wrapper -> base -> value).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tunelens.attribution.corpus import KIND_DEPTH, Function, FunctionPair, Query, QueryKind, as_functions, queries
from tunelens.config import UsageError

SPELLINGS = ("{}", " {}", "{}.", " {}.")


def candidate_numbers(functions: list[Function] | list[FunctionPair], margin: int = 2) -> list[int]:
    constants = [f.constant for f in as_functions(functions)]
    return list(range(min(constants) - margin, max(constants) + margin + 1))


def candidate_token_ids(tokenizer, numbers: list[int]) -> list[int]:
    """The id of each number's first single-token spelling; a number with none is an error."""
    ids = []
    for number in numbers:
        for spelling in SPELLINGS:
            encoded = tokenizer(spelling.format(number), add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids.append(encoded[0])
                break
        else:
            raise UsageError(f"the tokenizer has no single token for the number {number} (tried "
                             f"{', '.join(repr(s.format(number)) for s in SPELLINGS)}); add number tokens "
                             "(`--set add_number_tokens=true`)")
    return ids


def restricted_prediction(probs: Float[Tensor, "batch vocab"], candidate_ids: Int[Tensor, "candidate"]
                          ) -> tuple[Int[Tensor, "batch"], Float[Tensor, "batch candidate"]]:
    """(index of the arg-max among the candidates, the distribution renormalised over the candidates)."""
    restricted = probs[:, candidate_ids]
    return restricted.argmax(-1), restricted / restricted.sum(-1, keepdim=True).clamp(min=1e-30)


def encode_left_padded(tokenizer, prompts: list[str]) -> tuple[Tensor, Tensor]:
    """Left-padded ids and attention mask (the tokenizer's own special tokens, e.g. BOS, included)."""
    from tunelens.lm.batching import pad_batch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return pad_batch([tokenizer(prompt)["input_ids"] for prompt in prompts], pad, side="left")


@dataclass
class LogitEval:
    queries: list[Query]
    predicted: list[int]  # the predicted number of each query
    confidence: list[float]  # renormalised probability of the right number
    per_function: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def correct(self) -> list[bool]:
        return [p == q.answer for p, q in zip(self.predicted, self.queries)]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / max(len(self.queries), 1)

    def summary(self) -> dict[str, Any]:
        per_input: dict[int, list[bool]] = defaultdict(list)
        for query, ok in zip(self.queries, self.correct):
            per_input[query.input].append(ok)
        return {"accuracy": self.accuracy, "confidence": sum(self.confidence) / max(len(self.confidence), 1),
                "n_queries": len(self.queries), "per_function": self.per_function,
                "per_input": {x: sum(oks) / len(oks) for x, oks in sorted(per_input.items())}}


@torch.no_grad()
def logit_eval(model, tokenizer, functions: list[Function] | list[FunctionPair], kind: QueryKind,
               inputs: range | list[int] = range(1, 101), batch_size: int = 200, device: torch.device | str = "cpu"
               ) -> LogitEval:
    from tunelens.lm.scoring import next_token_probs

    asked = queries(functions, kind, inputs)
    numbers = candidate_numbers(functions)
    candidate_ids = torch.tensor(candidate_token_ids(tokenizer, numbers), device=device)
    was_training = model.training
    model.eval()
    predicted, confidence = [], []
    for start in range(0, len(asked), batch_size):
        chunk = asked[start:start + batch_size]
        input_ids, attention_mask = encode_left_padded(tokenizer, [q.prompt for q in chunk])
        probs = next_token_probs(model, input_ids.to(device), attention_mask.to(device))
        best, renormalised = restricted_prediction(probs, candidate_ids)
        predicted += [numbers[i] for i in best.tolist()]
        right = torch.tensor([numbers.index(q.answer) for q in chunk], device=device)
        confidence += renormalised.gather(1, right[:, None])[:, 0].tolist()
    model.train(was_training)
    result = LogitEval(asked, predicted, confidence)
    by_function: dict[str, list[int]] = defaultdict(list)
    for i, query in enumerate(asked):
        by_function[query.func].append(i)
    result.per_function = {
        func: {"accuracy": sum(result.correct[i] for i in rows) / len(rows),
               "confidence": sum(confidence[i] for i in rows) / len(rows)}
        for func, rows in by_function.items()}
    return result


def evaluate_all(model, tokenizer, functions: list[Function] | list[FunctionPair], device: torch.device | str = "cpu",
                 inputs: range | list[int] = range(1, 101)) -> dict[str, Any]:
    """Every depth the corpus has: `{"accuracy": {"depth0": .., "hops": .., ["depth2": ..]}, "confidence": {...},
    "depth0": {...}, "hops": {...}}` ("hops" = the depth-1 wrappers, the original's name)."""
    depths = {f.depth for f in as_functions(functions)}
    kinds = [kind for kind, depth in KIND_DEPTH.items() if depth in depths]
    results = {kind: logit_eval(model, tokenizer, functions, kind, inputs, device=device).summary()  # type: ignore
               for kind in kinds}
    return {"accuracy": {kind: r["accuracy"] for kind, r in results.items()},
            "confidence": {kind: r["confidence"] for kind, r in results.items()}, **results}


__all__ = ["LogitEval", "candidate_numbers", "candidate_token_ids", "encode_left_padded", "evaluate_all",
           "logit_eval", "restricted_prediction"]
