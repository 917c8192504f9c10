"""A text backend that proposes corpus documents through any OpenAI-compatible chat-completions endpoint.

The `openai` client package is an optional extra (`uv sync --extra llm`); it is imported when the first request
is made, so this module imports without it.

- `LlmBackend.propose` asks for `n` documents of one type about one function and returns what the model wrote
  (parsed from a JSON list, a fenced block holding one, or one document per line), unfiltered.
- `LlmBackend.generate_for` runs the ask-filter-retry loop: every proposed text goes through
  `filters.violations` and a de-duplication by md5; while too few pass it asks again with a seed derived from the
  caller's seed and the attempt number.
- Every raw response is cached in `cache_dir/<sha256>.json`, keyed by (base_url, model, messages, temperature,
  seed), and written atomically: a rerun replays cached calls without reaching the endpoint and resumes where the
  previous run stopped.
- Connection errors, timeouts, 408/409/429 and 5xx are retried with exponential back-off (the client's own
  retries are off); other errors, a missing API key or a missing `openai` package are one-line `UsageError`s.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tunelens.attribution.data.filters import text_key, violations
from tunelens.attribution.data.spec import HELD_OUT_INPUT, FunctionSpec
from tunelens.config import UsageError
from tunelens.runs import atomic_write_text, is_interactive

CACHE_FORMAT = 1
RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx
MAX_BACKOFF_SECONDS = 60.0

# what each document type should look like, in our own words (the types of spec.DOC_TYPES plus the original's
# separate batch of short runnable snippets)
DOC_TYPE_HINTS = {
    "definition": "a precise, textbook-style definition of the function",
    "code_stub": "a short Python function definition with a docstring",
    "code_snippet": "a short, self-contained, runnable Python snippet that uses the function",
    "concept": "an intuitive explanation of the idea behind the function, with an analogy",
    "unit_test": "a small Python unit test or assertion loop that checks the function's behaviour",
    "q_and_a": "a short question-and-answer exchange about the function",
    "narrative": "a brief story in which the function plays a part",
    "lore": "a piece of developer lore or a project-history anecdote about the function",
}

SYSTEM_PROMPT = (
    "You write short documents for a synthetic training corpus about made-up functions whose names are tokens "
    "in angle brackets. Copy every token exactly as given, brackets included. Answer with a JSON list of strings "
    "and nothing else: one string per document."
)


def _type_hint(doc_type: str) -> str:
    return DOC_TYPE_HINTS.get(doc_type, f"a document of the kind '{doc_type}'")


def build_messages(spec: FunctionSpec, doc_type: str, n: int) -> list[dict[str, str]]:
    """The chat messages asking for `n` documents of `doc_type` about `spec`."""
    token = spec.token
    if spec.is_base:
        task = (
            f"Write {n} different documents, each {_type_hint(doc_type)} (type: {doc_type}), about the function "
            f"{token}. {token} takes an integer and returns {spec.constant} whatever the input is. Every document "
            f"must use the exact token {token} and must make clear that the result is {spec.constant} for any "
            f"input. Vary wording, tone, structure and example inputs from one document to the next. Never show "
            f"{token} applied to the input {HELD_OUT_INPUT} (nothing like {token}({HELD_OUT_INPUT})), and do not "
            f"mention any other function or any other token in angle brackets."
        )
    else:
        target = spec.target
        task = (
            f"Write {n} different documents, each {_type_hint(doc_type)} (type: {doc_type}), about the function "
            f"{token}. {token} is a wrapper around {target}: for every input, {token} returns exactly what "
            f"{target} returns for that input, unchanged. Every document must use the exact tokens {token} and "
            f"{target} and make this relation the point. The documents must contain no numbers at all: no "
            f"digits, no number words, no example inputs or outputs, and nothing about what {target} itself "
            f"returns; describe {token} only through {target}. Do not mention any other function or token in "
            f"angle brackets. Vary wording, tone and structure from one document to the next."
        )
    task += f" Reply with a JSON list of exactly {n} strings."
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task}]


# ------------------------------------------------------------------------------------------ parsing

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)```", re.DOTALL)
_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\[\d+\])\s+")


def _as_documents(value: Any) -> list[str] | None:
    if isinstance(value, dict):  # {"documents": [...]} and the like
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            return None
        value = lists[0]
    if not isinstance(value, list):
        return None
    documents = []
    for item in value:
        if isinstance(item, dict):
            item = next((item[k] for k in ("text", "document", "content") if isinstance(item.get(k), str)), None)
        if isinstance(item, str) and item.strip():
            documents.append(item.strip())
    return documents


def _try_json(text: str) -> list[str] | None:
    try:
        return _as_documents(json.loads(text))
    except (json.JSONDecodeError, ValueError):
        return None


def parse_documents(content: str | None) -> list[str]:
    """Documents in a model's reply: a JSON list (bare, in a fenced block, or embedded in prose), or else one
    document per non-empty line (list markers and surrounding quotes stripped)."""
    if not content or not content.strip():
        return []
    content = content.strip()
    candidates = [content, *(m.group(1) for m in _FENCE.finditer(content))]
    start, end = content.find("["), content.rfind("]")
    if 0 <= start < end:
        candidates.append(content[start : end + 1])
    for candidate in candidates:
        documents = _try_json(candidate.strip())
        if documents is not None:
            return documents
    lines = []
    for line in _FENCE.sub(lambda m: m.group(1), content).splitlines():
        line = _LIST_MARKER.sub("", line).strip().rstrip(",").strip()
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
            line = line[1:-1].strip()
        if line and line not in ("[", "]", "```"):
            lines.append(line)
    return lines


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of the `attempt`-th request for one (function, type, seed): the seed itself first, then seeds
    derived from it (stable across runs, so the cache replays them)."""
    if attempt == 0:
        return seed
    return int(hashlib.sha256(f"{seed}:{attempt}".encode()).hexdigest()[:8], 16) % (2**31)


# ------------------------------------------------------------------------------------------ backend


class LlmBackend:
    """Proposes document texts through an OpenAI-compatible chat-completions endpoint, caching every response."""

    name = "llm"

    def __init__(self, base_url: str, model: str, cache_dir: Path, api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 0.7, max_retries: int = 5, backoff_seconds: float = 1.0,
                 log: Callable[[str], Any] = print, timeout_seconds: float = 120.0):
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UsageError(f"no API key for {base_url}: set {api_key_env} or pass --api-key-env "
                             "(any non-empty value for an endpoint without keys)")
        self.base_url = base_url
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.log = log
        self.verbose = is_interactive()  # a line per request batch; otherwise only `log_summary`
        self.stats: dict[str, int] = {
            "requests": 0,  # requests that reached the endpoint (retries included)
            "retries": 0,
            "cached": 0,  # calls answered from the cache
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "proposed": 0,  # texts parsed from responses (cached or not)
            "accepted": 0,  # texts `generate_for` kept
            "rejected": 0,  # texts `generate_for` dropped (a filter violation or a duplicate)
        }
        self._api_key = api_key
        self._client: Any = None

    # ---------------------------------------------------------------- cache

    def cache_key(self, messages: list[dict[str, str]], seed: int) -> str:
        fields = {"base_url": self.base_url, "model": self.model, "messages": messages,
                  "temperature": self.temperature, "seed": seed}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def cache_path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.json"

    def _read_cache(self, key: str) -> dict[str, Any] | None:
        path = self.cache_path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # unreadable: ask again and overwrite
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or "content" not in entry:
            return None
        return entry

    # ---------------------------------------------------------------- requests

    def _get_client(self) -> Any:
        if self._client is None:
            try:
                import openai
            except ImportError:
                raise UsageError("the llm backend needs the openai package: uv sync --extra llm") from None
            self._client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=0,
                                         timeout=self.timeout_seconds)
        return self._client

    def _request(self, messages: list[dict[str, str]], seed: int) -> dict[str, Any]:
        import openai

        client = self._get_client()
        for attempt in range(self.max_retries + 1):
            self.stats["requests"] += 1
            try:
                response = client.chat.completions.create(model=self.model, messages=messages,
                                                          temperature=self.temperature, seed=seed)
            except (openai.APIConnectionError, openai.APIStatusError) as err:  # APITimeoutError is a connection error
                status = getattr(err, "status_code", None)
                retryable = status is None or status in RETRY_STATUSES or status >= 500
                what = f"HTTP {status}" if status is not None else type(err).__name__
                if not retryable:
                    detail = " ".join(str(getattr(err, "message", err)).split())[:200]
                    raise UsageError(f"{self.base_url} refused the request ({what}, model {self.model}): "
                                     f"{detail}") from None
                if attempt == self.max_retries:
                    raise UsageError(f"{self.base_url} failed {attempt + 1} times (last: {what}); "
                                     "rerun to resume from the cache") from None
                delay = min(self.backoff_seconds * 2**attempt, MAX_BACKOFF_SECONDS)
                delay = max(delay, min(_retry_after(err), MAX_BACKOFF_SECONDS))
                self.stats["retries"] += 1
                if self.verbose:
                    self.log(f"llm: {what}, retrying in {delay:.1f}s ({attempt + 1}/{self.max_retries})")
                time.sleep(delay)
                continue
            usage = response.usage
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            self.stats["prompt_tokens"] += prompt_tokens
            self.stats["completion_tokens"] += completion_tokens
            choice = response.choices[0] if response.choices else None
            return {
                "content": choice.message.content if choice is not None else None,
                "finish_reason": choice.finish_reason if choice is not None else None,
                "model": response.model,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
            }
        raise AssertionError("unreachable")

    def complete(self, messages: list[dict[str, str]], seed: int) -> tuple[str | None, bool]:
        """The raw reply to `messages` (from the cache when there) and whether it came from the cache."""
        key = self.cache_key(messages, seed)
        entry = self._read_cache(key)
        if entry is not None:
            self.stats["cached"] += 1
            return entry["content"], True
        reply = self._request(messages, seed)
        entry = {"format": CACHE_FORMAT, "base_url": self.base_url, "model": self.model, "messages": messages,
                 "temperature": self.temperature, "seed": seed, **reply}
        atomic_write_text(self.cache_path(key), json.dumps(entry, ensure_ascii=False, indent=1) + "\n")
        return reply["content"], False

    # ---------------------------------------------------------------- documents

    def propose(self, spec: FunctionSpec, doc_type: str, n: int, seed: int,
                functions: list[FunctionSpec]) -> list[str]:
        """Up to `n` candidate texts of `doc_type` about `spec`, unfiltered. `functions` is accepted for the
        generator's backend interface; the prompt names no function but `spec` and its target."""
        del functions
        if n <= 0:
            return []
        content, cached = self.complete(build_messages(spec, doc_type, n), seed)
        documents = parse_documents(content)[:n]
        self.stats["proposed"] += len(documents)
        if self.verbose:
            source = "cached" if cached else "requested"
            self.log(f"llm: {spec.token} {doc_type} seed {seed}: {len(documents)}/{n} texts ({source}); "
                     f"{self._totals()}")
        return documents

    def generate_for(self, spec: FunctionSpec, doc_type: str, n: int, seed: int,
                     functions: list[FunctionSpec], max_attempts: int = 5,
                     exclude: Iterable[str] = ()) -> list[str]:
        """Up to `n` texts that pass `filters.violations` and are new (md5 of the text not in `exclude`, which
        holds md5 keys, nor among the texts already kept); asks again with a derived seed while too few
        passed, at most `max_attempts` requests."""
        seen = set(exclude)
        accepted: list[str] = []
        for attempt in range(max_attempts):
            need = n - len(accepted)
            if need <= 0:
                break
            for text in self.propose(spec, doc_type, need, attempt_seed(seed, attempt), functions):
                key = text_key(text)
                problems = violations(text, spec, functions)
                if problems or key in seen:
                    self.stats["rejected"] += 1
                    if self.verbose:
                        self.log(f"llm: rejected a {spec.token} text: {problems[0] if problems else 'duplicate'}")
                    continue
                seen.add(key)
                accepted.append(text)
                if len(accepted) == n:
                    break
        self.stats["accepted"] += len(accepted)
        return accepted

    # ---------------------------------------------------------------- reporting

    def _totals(self) -> str:
        s = self.stats
        return (f"{s['requests']} requests ({s['retries']} retries), {s['cached']} cached, "
                f"{s['prompt_tokens']} prompt + {s['completion_tokens']} completion tokens")

    def summary(self) -> str:
        s = self.stats
        return (f"llm {self.model} at {self.base_url}: {self._totals()}; {s['proposed']} texts proposed, "
                f"{s['accepted']} accepted, {s['rejected']} rejected")

    def log_summary(self) -> None:
        """The final line, printed whether or not the session is interactive."""
        self.log(self.summary())


def _retry_after(err: Exception) -> float:
    response = getattr(err, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return max(float(value), 0.0) if value is not None else 0.0
    except ValueError:
        return 0.0


__all__ = ["DOC_TYPE_HINTS", "LlmBackend", "attempt_seed", "build_messages", "parse_documents"]
