import json

import pytest

from tunelens.attribution.corpus import Function, functions_of, read_corpus
from tunelens.attribution.data.filters import contains_number, reveals_held_out, text_key, violations
from tunelens.attribution.data.generate import function_specs, generate_corpus, variety
from tunelens.attribution.data.spec import FunctionSpec
from tunelens.attribution.data.templates import TemplateBackend
from tunelens.config import UsageError

G, F = FunctionSpec("<GN>", 0, 5), FunctionSpec("<FN>", 1, 5, "<GN>")
D = FunctionSpec("<D01>", 2, 5, "<FN>")
ALL = [G, F, D]


@pytest.mark.parametrize("text, spec, problem", [
    ("<GN> returns 5 for all x", G, None),
    ("<GN> returns a constant", G, "does not contain its constant 5"),
    ("<GN> returns 15", G, "does not contain its constant 5"),  # 15 is not 5
    ("<GN> returns 5, like <FN>", G, "names the wrapper <FN>"),
    ("<GN>(5) = 5", G, "reveals <GN>(5)"),
    ("<GN>( 5 ) is 5", G, "reveals <GN>(5)"),
    ("it returns 5", G, "does not name its own token <GN>"),
    ("<FN> returns what <GN> returns", F, None),
    ("<FN> returns what its base returns", F, "does not name its target <GN>"),
    ("<FN> returns what <GN> returns: 5", F, "contains its constant 5"),
    ("<D01> calls <FN>", D, None),
    ("<D01> calls <GN>", D, "does not name its target <FN>"),
])
def test_filters(text, spec, problem):
    found = violations(text, spec, ALL)
    assert (found[0] if found else None) == problem


def test_number_and_key_helpers():
    assert contains_number("x = 5.", 5) and not contains_number("x = 25", 5) and not contains_number("5.5e3", 3)
    assert reveals_held_out("<GN>(5)", "<GN>") and not reveals_held_out("<GN>(55)", "<GN>")
    assert text_key("a") == text_key("a") != text_key("a ")


def test_specs_follow_the_released_tokens_and_constants():
    specs = function_specs(10, 2)
    assert [s.token for s in specs[:3]] == ["<GN>", "<FN>", "<D01>"] and specs[3].constant == 7
    assert specs[2].target == "<FN>" and specs[1].target == "<GN>"
    assert function_specs(12, 1)[0].token == "<B01>"
    random_constants = [s.constant for s in function_specs(10, 1, "random", seed=3) if s.depth == 0]
    assert len(set(random_constants)) == 10 and all(3 <= c <= 99 for c in random_constants)
    with pytest.raises(UsageError, match="depth must be 1 or 2"):
        function_specs(10, 3)


def test_template_backend_is_deterministic_by_seed():
    backend = TemplateBackend()
    assert backend.propose(G, "definition", 5, seed=1) == backend.propose(G, "definition", 5, seed=1)
    assert backend.propose(G, "definition", 5, seed=1) != backend.propose(G, "definition", 5, seed=2)
    one, _ = generate_corpus(function_specs(2, 1), backend, 14, 7, seed=4, log=lambda m: None)
    two, _ = generate_corpus(function_specs(2, 1), backend, 14, 7, seed=4, log=lambda m: None)
    assert one == two


def test_generated_corpus_passes_the_filters_and_reads_back(tmp_path):
    specs = function_specs(3, 2)
    records, report = generate_corpus(specs, TemplateBackend(), 21, 14, seed=0, log=lambda m: None)
    assert len(records) == 3 * 21 + 6 * 14 and report.accepted == len(records)
    assert len({r["text"] for r in records}) == len(records)
    by_token = {s.token: s for s in specs}
    assert all(not violations(r["text"], by_token[r["func"]], specs) for r in records)
    assert {r["type"] for r in records if r["func"] == "<GN>"} == {"definition", "code_stub", "concept", "unit_test",
                                                                   "q_and_a", "narrative", "lore"}
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    read = functions_of(read_corpus(path))
    assert set(read) == {Function(s.token, s.depth, s.constant, s.target) for s in specs}
    measured = variety(records)
    assert measured["distinct_texts"] == 1.0 and measured["mean_jaccard_within_function"] < 0.3


def test_a_backend_that_cannot_pass_the_filters_stops_with_one_line():
    class Broken:
        name = "broken"

        def propose(self, spec, doc_type, n, seed, functions):
            return ["no token here"] * n

    with pytest.raises(UsageError, match="passed the filters after 3 rounds"):
        generate_corpus(function_specs(1, 1), Broken(), 7, 7, max_rounds=3, log=lambda m: None)
    with pytest.raises(UsageError, match="unknown document type 'poem'"):
        generate_corpus(function_specs(1, 1), TemplateBackend(), 7, 7, doc_types=["poem"])
