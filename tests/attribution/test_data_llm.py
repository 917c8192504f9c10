"""LlmBackend against a scripted chat-completions server on 127.0.0.1 (stdlib http.server in a thread)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tunelens.attribution.data.filters import violations
from tunelens.attribution.data.llm import LlmBackend, attempt_seed, build_messages, parse_documents
from tunelens.attribution.data.spec import FunctionSpec
from tunelens.config import UsageError

GN = FunctionSpec("<GN>", 0, 5)
JN = FunctionSpec("<JN>", 0, 7)
FN = FunctionSpec("<FN>", 1, 5, "<GN>")
IN = FunctionSpec("<IN>", 1, 7, "<JN>")
FUNCTIONS = [GN, JN, FN, IN]


class ScriptedServer:
    """Answers POST /v1/chat/completions from a script of (status, content) pairs, then repeats `default`."""

    def __init__(self, script=(), default=None, responder=None):
        self.script = list(script)
        self.default = default
        self.responder = responder  # body -> content, instead of the script
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                if server.responder is not None:
                    status, content = 200, server.responder(body)
                else:
                    status, content = server.script.pop(0) if server.script else server.default
                if status != 200:
                    return self._send(status, {"error": {"message": f"scripted {status}", "type": "server_error"}})
                self._send(200, {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                })

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("TUNELENS_TEST_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return "TUNELENS_TEST_KEY"


def make_backend(server_url, cache_dir, api_key_env, **kwargs):
    lines = []
    kwargs.setdefault("backoff_seconds", 0.001)
    backend = LlmBackend(server_url, "test-model", cache_dir, api_key_env=api_key_env, log=lines.append, **kwargs)
    backend.lines = lines
    return backend


def test_filter_violation_is_rejected_and_asked_again(tmp_path, api_key):
    bad = json.dumps(["<FN> returns what <GN> returns, which is 5.", "<FN> forwards to <GN>; it always gives 5"])
    good = json.dumps(["<FN> returns exactly what <GN> returns.", "Calling <FN> is calling <GN>, unchanged."])
    with ScriptedServer([(200, bad), (200, good)]) as server:
        backend = make_backend(server.base_url, tmp_path, api_key)
        texts = backend.generate_for(FN, "definition", 2, seed=3, functions=FUNCTIONS)
    assert texts == json.loads(good)
    assert all(not violations(t, FN, FUNCTIONS) for t in texts)
    assert len(server.requests) == 2
    seeds = [r["body"]["seed"] for r in server.requests]
    assert seeds == [3, attempt_seed(3, 1)] and seeds[0] != seeds[1]
    assert server.requests[0]["auth"] == "Bearer sk-test"
    assert backend.stats["rejected"] == 2 and backend.stats["accepted"] == 2
    assert backend.stats["prompt_tokens"] == 22 and backend.stats["completion_tokens"] == 14


def test_generate_for_drops_duplicates_and_stops_after_max_attempts(tmp_path, api_key):
    doc = "The function <GN> maps any integer x to 5."
    with ScriptedServer(default=(200, json.dumps([doc, doc, "<GN>(5) = 5"]))) as server:
        backend = make_backend(server.base_url, tmp_path, api_key)
        texts = backend.generate_for(GN, "definition", 3, seed=0, functions=FUNCTIONS, max_attempts=3)
    assert texts == [doc]
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [500, 429, 503])
def test_transient_errors_are_retried_with_backoff(tmp_path, api_key, monkeypatch, status):
    good = json.dumps(["<GN> always returns 5."])
    with ScriptedServer([(status, None), (status, None), (200, good)]) as server:
        backend = make_backend(server.base_url, tmp_path, api_key, max_retries=3)
        backend.verbose = True
        sleeps = []
        monkeypatch.setattr("tunelens.attribution.data.llm.time.sleep", sleeps.append)
        texts = backend.propose(GN, "concept", 1, seed=1, functions=FUNCTIONS)
    assert texts == ["<GN> always returns 5."]
    assert len(server.requests) == 3  # the client's own retries are off: one request per attempt of ours
    assert sleeps == [0.001, 0.002]  # exponential
    assert backend.stats["retries"] == 2 and backend.stats["requests"] == 3
    assert any(f"HTTP {status}" in line for line in backend.lines)


def test_exhausted_retries_and_client_errors_are_one_line_usage_errors(tmp_path, api_key):
    with ScriptedServer(default=(500, None)) as server:
        backend = make_backend(server.base_url, tmp_path, api_key, max_retries=2)
        with pytest.raises(UsageError) as info:
            backend.propose(GN, "concept", 1, seed=1, functions=FUNCTIONS)
    assert len(server.requests) == 3
    assert "\n" not in str(info.value) and "3 times" in str(info.value)
    assert not list(tmp_path.glob("*.json"))  # nothing cached for a failed call

    with ScriptedServer(default=(400, None)) as server:
        backend = make_backend(server.base_url, tmp_path, api_key, max_retries=5)
        with pytest.raises(UsageError) as info:
            backend.propose(GN, "concept", 1, seed=1, functions=FUNCTIONS)
    assert len(server.requests) == 1  # not retried
    assert "\n" not in str(info.value) and "HTTP 400" in str(info.value)


def test_connection_refused_is_retried_then_reported(tmp_path, api_key):
    with ScriptedServer() as server:
        url = server.base_url  # the port is closed once the server is gone
    backend = make_backend(url, tmp_path, api_key, max_retries=2)
    with pytest.raises(UsageError, match="failed 3 times"):
        backend.propose(GN, "concept", 1, seed=1, functions=FUNCTIONS)
    assert backend.stats["retries"] == 2


def test_interrupted_generation_resumes_from_the_cache(tmp_path, api_key):
    replies = [json.dumps([f"<GN> returns 5 (variant {i})."]) for i in range(3)]
    calls = [(GN, "definition", 0), (GN, "concept", 1), (GN, "lore", 2)]
    with ScriptedServer([(200, replies[0]), (200, replies[1]), (500, None), (200, replies[2])]) as server:
        first = make_backend(server.base_url, tmp_path, api_key, max_retries=0)
        done = [first.propose(spec, t, 1, seed, FUNCTIONS) for spec, t, seed in calls[:2]]
        with pytest.raises(UsageError):  # the run dies on the third call
            first.propose(calls[2][0], calls[2][1], 1, calls[2][2], FUNCTIONS)
        assert len(server.requests) == 3 and len(list(tmp_path.glob("*.json"))) == 2
        assert not list(tmp_path.glob(".*.tmp"))

        second = make_backend(server.base_url, tmp_path, api_key)  # the rerun, on the same cache
        redone = [second.propose(spec, t, 1, seed, FUNCTIONS) for spec, t, seed in calls]
        assert redone[:2] == done
        assert redone[2] == json.loads(replies[2])
        assert len(server.requests) == 4  # only the uncached call reached the endpoint
        assert server.requests[-1]["body"]["messages"] == build_messages(GN, "lore", 1)
        assert second.stats["cached"] == 2 and second.stats["requests"] == 1

        third = make_backend(server.base_url, tmp_path, api_key)  # answered entirely from the cache
        assert [third.propose(spec, t, 1, seed, FUNCTIONS) for spec, t, seed in calls] == redone
        assert len(server.requests) == 4 and third.stats["cached"] == 3 and third.stats["requests"] == 0
    third.log_summary()
    assert third.lines == [third.summary()] and "3 cached" in third.lines[-1]  # quiet but for the summary
    entry = json.loads(third.cache_path(third.cache_key(build_messages(GN, "lore", 1), 2)).read_text())
    assert entry["content"] == replies[2] and entry["seed"] == 2 and entry["model"] == "test-model"


def test_cache_key_depends_on_model_temperature_seed_and_messages(tmp_path, api_key):
    backend = make_backend("http://127.0.0.1:9/v1", tmp_path, api_key)
    messages = build_messages(GN, "definition", 3)
    key = backend.cache_key(messages, 0)
    assert key == make_backend("http://127.0.0.1:9/v1", tmp_path, api_key).cache_key(messages, 0)
    assert key != backend.cache_key(messages, 1)
    assert key != backend.cache_key(build_messages(GN, "definition", 4), 0)
    assert key != make_backend("http://127.0.0.1:9/v1", tmp_path, api_key, temperature=0.2).cache_key(messages, 0)
    other_model = LlmBackend("http://127.0.0.1:9/v1", "other", tmp_path, api_key_env=api_key)
    assert key != other_model.cache_key(messages, 0)


def test_missing_api_key_is_a_one_line_usage_error_before_any_request(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedServer(default=(200, "[]")) as server, pytest.raises(UsageError) as info:
        LlmBackend(server.base_url, "test-model", tmp_path)
    message = str(info.value)
    assert "\n" not in message and "set OPENAI_API_KEY or pass --api-key-env" in message
    assert server.requests == []
    monkeypatch.setenv("OPENAI_API_KEY", "")
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        LlmBackend("http://127.0.0.1:9/v1", "test-model", tmp_path)


def test_prompts_state_the_relation_and_keep_numbers_out_of_wrapper_prompts():
    base = build_messages(GN, "unit_test", 4)[-1]["content"]
    assert "<GN>" in base and "returns 5" in base and "<GN>(5)" in base and "JSON list" in base
    wrapper = build_messages(FN, "q_and_a", 4)[-1]["content"]
    assert "<FN>" in wrapper and "<GN>" in wrapper and "no numbers" in wrapper
    assert " 5 " not in wrapper and "5." not in wrapper  # the constant never reaches a wrapper prompt


@pytest.mark.parametrize(("content", "expected"), [
    ('["a <GN> 5", "b <GN> 5"]', ["a <GN> 5", "b <GN> 5"]),
    ('Here you go:\n```json\n["one", "two"]\n```\nEnjoy.', ["one", "two"]),
    ('```\n["def f():\\n    return 5"]\n```', ["def f():\n    return 5"]),
    ('Sure! ["x", "y"] as asked', ["x", "y"]),
    ('{"documents": ["x", " ", "y"]}', ["x", "y"]),
    ('[{"text": "x"}, {"document": "y"}]', ["x", "y"]),
    ("1. first document\n2. second document\n\n- third", ["first document", "second document", "third"]),
    ('"quoted one",\n"quoted two"', ["quoted one", "quoted two"]),
    ("", []),
    (None, []),
])
def test_parse_documents(content, expected):
    assert parse_documents(content) == expected


def test_generate_command_with_the_llm_backend(tmp_path, api_key):
    """The whole command against the local server: documents for every function, filtered, written atomically,
    and a second run answered from the cache alone."""
    import re

    from typer.testing import CliRunner

    from tunelens.cli import app

    def respond(body):
        prompt = " ".join(m["content"] for m in body["messages"])
        token = re.search(r"<[A-Z]N>", prompt).group(0)
        tag = "".join("abcdefghij"[int(d)] for d in str(body["seed"]))
        if token == "<GN>":
            return json.dumps([f"<GN> returns 5 ({tag} {i})" for i in range(8)])
        return json.dumps([f"<FN> returns what <GN> returns ({tag} {letter})" for letter in "klmnopqr"])

    out = tmp_path / "corpus.jsonl"
    args = ["attribution", "data", "generate", "--out", str(out), "--pairs", "1", "--docs-per-base", "14",
            "--docs-per-wrapper", "7", "--backend", "llm", "--base-url", "", "--model", "test-model",
            "--api-key-env", api_key, "--cache-dir", str(tmp_path / "cache")]
    with ScriptedServer(responder=respond) as server:
        args[args.index("--base-url") + 1] = server.base_url
        first = CliRunner().invoke(app, args)
        n_requests = len(server.requests)
        out.unlink()
        second = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0 and len(server.requests) == n_requests > 0  # all from the cache
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 21 and {r["func"] for r in records} == {"<GN>", "<FN>"}
    assert all(not violations(r["text"], GN if r["func"] == "<GN>" else FN, FUNCTIONS) for r in records)


def test_generate_command_without_a_key_is_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tunelens.cli import app

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "corpus.jsonl"
    result = CliRunner().invoke(app, ["attribution", "data", "generate", "--out", str(out), "--backend", "llm",
                                      "--base-url", "http://127.0.0.1:9/v1", "--model", "m"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "OPENAI_API_KEY" in lines[0] and not out.exists()
