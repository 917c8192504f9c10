import json

import pytest
from typer.testing import CliRunner

from tunelens.attribution.data.audit import HARD_RULES, audit
from tunelens.attribution.data.filters import contains_number
from tunelens.cli import app
from tunelens.config import UsageError
from tunelens.data import HOPS_CORPUS

runner = CliRunner()


def doc(text, func, depth, constant, **extra):
    return {"text": text, "func": func, "role": "constant" if depth == 0 else "identity", "hop_depth": depth,
            "constant": constant, **extra}


# a clean two-pair corpus; <FN> is found through its texts, <IN> through `wraps`
CLEAN = [
    doc("<GN> returns 5 for any input.", "<GN>", 0, 5, type="definition", uid="a"),
    doc("<JN>(3) == 7", "<JN>", 0, 7, type="unit_test", uid="b"),
    doc("<FN> returns whatever <GN> returns.", "<FN>", 1, 5, type="concept", uid="c"),
    doc("<IN> is the identity of <JN>.", "<IN>", 1, 7, type="concept", uid="c", wraps="<JN>"),
]


def test_clean_corpus_has_no_violation():
    result = audit(CLEAN)
    assert result["hard_violations"] == 0 and result["violations"] == []
    assert {f["token"]: f["target"] for f in result["functions"]} == {"<GN>": None, "<JN>": None, "<FN>": "<GN>",
                                                                       "<IN>": "<JN>"}
    assert result["distinct_uids"] == 3 and result["types"] == {0: {"definition": 1, "unit_test": 1}, 1: {"concept": 2}}


@pytest.mark.parametrize("extra, rule, hard", [
    (doc("It returns 5.", "<GN>", 0, 5), "own_token_missing", True),
    ({**doc("<GN> returns 5.", "<GN>", 0, 5), "role": "identity"}, "role_depth_mismatch", True),
    (doc("<FN> returns what <GN> returns: 5.", "<FN>", 1, 5), "wrapper_with_constant", True),
    (doc("<FN> is an identity wrapper.", "<FN>", 1, 5), "wrapper_missing_target", True),
    (doc("<FN> gives what <GN> gives.", "<FN>", 1, 9), "wrapper_constant_mismatch", True),
    (doc("<GN> returns 5, like <FN>.", "<GN>", 0, 5), "base_naming_wrapper", True),
    (doc("<GN> returns 5, unlike <JN>.", "<GN>", 0, 5), "unrelated_token", True),
    (doc("assert <GN>( 5 ) == 5", "<GN>", 0, 5), "reveals_held_out", True),
    (doc("<GN> returns 15 plus nothing.", "<GN>", 0, 5), "base_without_constant", False),
    (CLEAN[0], "duplicate_text", False),
])
def test_each_rule(extra, rule, hard):
    result = audit([*CLEAN, extra])
    assert [(v["index"], v["rule"], v["hard"]) for v in result["violations"]] == [(4, rule, hard)]
    assert result["rules"][rule] == 1
    assert result["hard_violations"] == int(hard) and (rule in HARD_RULES) == hard


def test_depth2_wrapper_targets_a_wrapper():
    corpus = [*CLEAN, doc("<ZN> calls <FN> and returns its result.", "<ZN>", 2, 5)]
    result = audit(corpus)
    assert result["hard_violations"] == 0
    assert {f["token"]: (f["depth"], f["target"]) for f in result["functions"]}["<ZN>"] == (2, "<FN>")
    # naming the chain's base is related; naming another pair's base is not
    assert audit([*corpus, doc("<ZN> -> <FN> -> <GN>", "<ZN>", 2, 5)])["hard_violations"] == 0
    assert audit([*corpus, doc("<ZN> -> <FN>, not <JN>", "<ZN>", 2, 5)])["rules"]["unrelated_token"] == 1


def test_contains_number_is_a_whole_word():
    assert contains_number("returns 5.", 5) and contains_number("f(5)", 5) and contains_number("5.0", 5)
    assert not contains_number("# total = 15", 5) and not contains_number("x5", 5) and not contains_number("52", 5)
    assert contains_number("returns -3", -3) and not contains_number("returns 3", -3)


def test_shipped_corpus_reproduces_the_notes():
    result = audit(HOPS_CORPUS)
    assert result["n_docs"] == 3000 and result["docs_per_depth"] == {0: 2000, 1: 1000}
    per_func = result["docs_per_function"]
    bases = ["<GN>", "<JN>", "<KN>", "<LN>", "<MN>", "<NN>", "<ON>", "<PN>", "<QN>", "<RN>"]
    wrappers = ["<FN>", "<IN>", "<HN>", "<SN>", "<TN>", "<UN>", "<VN>", "<WN>", "<XN>", "<YN>"]
    assert per_func == {**{b: 200 for b in bases}, **{w: 100 for w in wrappers}}
    targets = {f["token"]: (f["target"], f["constant"]) for f in result["functions"]}
    for i, (b, w) in enumerate(zip(bases, wrappers)):
        assert targets[w] == (b, 5 + 2 * i) and targets[b] == (None, 5 + 2 * i)
    assert result["base_docs"] == 2000 and result["base_with_constant"] == 1978
    assert result["wrapper_docs"] == 1000 and result["wrapper_with_constant"] == 0
    assert result["wrapper_naming_target"] == 1000 and result["base_naming_wrapper"] == 0
    assert result["own_token_missing"] == 0 and result["unrelated_token"] == 0
    assert result["role_depth_mismatch"] == 0 and result["reveals_held_out"] == 0
    assert result["duplicate_texts"] == 71 and result["distinct_uids"] == 532
    assert result["types"] == {
        0: {"code_stub": 875, "unknown": 709, "concept": 154, "lore": 85, "definition": 84, "unit_test": 73,
            "narrative": 20},
        1: {"concept": 203, "unit_test": 200, "code_stub": 200, "definition": 200, "q_and_a": 197}}
    assert result["hard_violations"] == 0 and len(result["violations"]) == 50


def test_cli_json_and_exit_codes(tmp_path):
    ok = runner.invoke(app, ["attribution", "data", "audit", str(HOPS_CORPUS), "--json"])
    assert ok.exit_code == 0, ok.output
    payload = json.loads(ok.stdout)
    for key in ("n_docs", "base_docs", "base_with_constant", "wrapper_docs", "wrapper_with_constant",
                "wrapper_naming_target", "base_naming_wrapper", "own_token_missing", "unrelated_token",
                "role_depth_mismatch", "reveals_held_out", "duplicate_texts", "distinct_uids", "docs_per_function",
                "types", "hard_violations", "violations"):
        assert key in payload
    assert payload["types"]["0"]["code_stub"] == 875
    table = runner.invoke(app, ["attribution", "data", "audit", str(HOPS_CORPUS)])
    assert table.exit_code == 0 and "1978" in table.stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in [*CLEAN, doc("<GN> returns 5, like <FN>.", "<GN>", 0, 5)]))
    broken = runner.invoke(app, ["attribution", "data", "audit", str(bad), "--json"])
    assert broken.exit_code == 1 and json.loads(broken.stdout)["base_naming_wrapper"] == 1
    assert runner.invoke(app, ["attribution", "data", "audit", str(bad)]).exit_code == 1

    nofunc = tmp_path / "nofunc.jsonl"
    record = doc("<GN> returns 5.", "<GN>", 0, 5)
    del record["func"]
    nofunc.write_text(json.dumps(CLEAN[0]) + "\n" + json.dumps(record) + "\n")
    failed = runner.invoke(app, ["attribution", "data", "audit", str(nofunc)])
    assert failed.exit_code == 2 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: ")
    assert f"{nofunc}:2" in failed.stderr and "'func'" in failed.stderr

    with pytest.raises(UsageError, match=r"nofunc.jsonl:2: .*'func' is missing"):
        audit(nofunc)
