import json

import pytest

from tunelens.attribution.corpus import (
    Document,
    FunctionPair,
    function_pairs,
    function_tokens,
    queries,
    read_corpus,
    relevance_matrix,
    relevant,
    wrapper_letter,
)
from tunelens.config import UsageError
from tunelens.data import HOPS_CORPUS, HOPS_CORPUS_6K, HOPS_SEEDS

SHARED_PAIRS = [{"base": b, "wrapper": w, "constant": c} for b, w, c in [
    ("<GN>", "<FN>", 5), ("<JN>", "<IN>", 7), ("<KN>", "<HN>", 9), ("<LN>", "<SN>", 11), ("<MN>", "<TN>", 13),
    ("<NN>", "<UN>", 15), ("<ON>", "<VN>", 17), ("<PN>", "<WN>", 19), ("<QN>", "<XN>", 21), ("<RN>", "<YN>", 23)]]


def test_shipped_corpus_counts_and_pairs():
    docs = read_corpus(HOPS_CORPUS)
    assert len(docs) == 3000 and [d.index for d in docs[:3]] == [0, 1, 2]
    assert sum(d.hop_depth == 0 for d in docs) == 2000 and sum(d.hop_depth == 1 for d in docs) == 1000
    pairs = function_pairs(docs)
    assert [p.__dict__ for p in pairs] == SHARED_PAIRS  # read from the texts, as the benchmark defines them
    assert function_tokens(pairs)[:4] == ["<GN>", "<FN>", "<JN>", "<IN>"]
    assert len(read_corpus(HOPS_CORPUS_6K)) == 6000 and len(read_corpus(HOPS_SEEDS)) == 100
    assert function_pairs(read_corpus(HOPS_CORPUS_6K)) == pairs


def test_queries_follow_the_original_template():
    pairs = [FunctionPair("<GN>", "<FN>", 5)]
    hops = queries(pairs, "hops", [1, 12])
    assert [q.prompt for q in hops] == ["<FN>(1) returns the value ", "<FN>(12) returns the value "]
    assert all(q.answer == 5 and q.hop_depth == 1 for q in hops)
    assert queries(pairs, "depth0", [3])[0].prompt == "<GN>(3) returns the value "
    assert wrapper_letter("<FN>") == "f" and wrapper_letter("<GN>") == "g"


def doc(func: str, role: str, index: int = 0) -> Document:
    return Document(index, "text", func, role, 0 if role == "constant" else 1, 5)


def test_relevance_is_own_function_or_its_pair():
    pairs = [FunctionPair("<GN>", "<FN>", 5), FunctionPair("<JN>", "<IN>", 7)]
    assert relevant(doc("<FN>", "identity"), "<FN>", pairs)
    assert relevant(doc("<GN>", "constant"), "<FN>", pairs)  # the base holds the value
    assert relevant(doc("<FN>", "identity"), "<GN>", pairs)  # both directions
    assert not relevant(doc("<JN>", "constant"), "<FN>", pairs)
    # role_match: a document of a base token whose role says wrapper does not count
    assert not relevant(doc("<GN>", "identity"), "<FN>", pairs, role_match=True)
    assert relevant(doc("<GN>", "identity"), "<FN>", pairs, role_match=False)
    matrix = relevance_matrix([doc("<FN>", "identity", 0), doc("<JN>", "constant", 1)], ["<FN>", "<IN>"], pairs)
    assert matrix.tolist() == [[True, False], [False, True]]


@pytest.mark.parametrize("line, message", [
    ({"func": "<GN>", "role": "constant", "hop_depth": 0, "constant": 5}, "'text' is missing"),
    ({"text": "x", "func": "GN", "role": "constant", "hop_depth": 0, "constant": 5}, "'func' must be a function"),
    ({"text": "x", "func": "<GN>", "role": "base", "hop_depth": 0, "constant": 5}, "'role' must be one of"),
    ({"text": "x", "func": "<GN>", "role": "constant", "hop_depth": 1, "constant": 5}, "goes with hop_depth 0"),
    ({"text": "x", "func": "<GN>", "role": "constant", "hop_depth": 0, "constant": "5"}, "'constant' must be an"),
])
def test_malformed_documents_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = {"text": "<GN> returns 5", "func": "<GN>", "role": "constant", "hop_depth": 0, "constant": 5}
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(UsageError, match=message) as err:
        read_corpus(path)
    assert f"{path}:2" in str(err.value)


def test_wrapper_without_a_named_base_is_an_error():
    docs = [doc("<GN>", "constant"), Document(1, "no token here", "<FN>", "identity", 1, 5)]
    with pytest.raises(UsageError, match="none of its documents names a function one level down"):
        function_pairs(docs)


def test_depth_two_chains_are_read_from_the_texts():
    from tunelens.attribution.corpus import Function, chain_base, component, functions_of

    docs = [Document(0, "<GN> returns 5", "<GN>", "constant", 0, 5),
            Document(1, "<FN> returns what <GN> returns", "<FN>", "identity", 1, 5),
            Document(2, "<AN> calls <FN>, never <GN> directly... well, <FN>", "<AN>", "identity", 2, 5),
            Document(3, "<JN> returns 7", "<JN>", "constant", 0, 7)]
    functions = functions_of(docs)
    assert functions == [Function("<GN>", 0, 5), Function("<FN>", 1, 5, "<GN>"), Function("<AN>", 2, 5, "<FN>"),
                         Function("<JN>", 0, 7)]
    assert chain_base("<AN>", functions) == "<GN>" and component("<FN>", functions) == {"<GN>", "<FN>", "<AN>"}
    assert [q.prompt for q in queries(functions, "depth2", [3])] == ["<AN>(3) returns the value "]
    assert [relevant(d, "<AN>", functions) for d in docs] == [True, True, True, False]


def test_a_chain_without_a_base_document_is_an_error():
    from tunelens.attribution.corpus import functions_of

    docs = [Document(0, "<FN> returns what <GN> returns", "<FN>", "identity", 1, 5),
            Document(1, "<GN> returns what <FN> returns", "<GN>", "identity", 1, 5)]
    with pytest.raises(UsageError, match="names a function one level down"):
        functions_of(docs)
