import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelens.attribution.data import ops
from tunelens.cli import app
from tunelens.config import UsageError
from tunelens.data import HOPS_CORPUS, HOPS_CORPUS_6K

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "hops"


def funcs(records):
    return [r["func"] for r in records]


def test_released_pattern_restores_the_shipped_order(tmp_path):
    shipped = ops.read_records(HOPS_CORPUS)
    shuffled = ops.order(shipped, "shuffle", seed=3)
    assert funcs(shuffled) != funcs(shipped) and sorted(funcs(shuffled)) == sorted(funcs(shipped))
    assert funcs(ops.order(shuffled, "released"))[:3000] == funcs(shipped)
    assert ops.order(shipped, "released") == shipped  # each function's documents keep their order
    # on the command line, with the escaped serialisation of 20hops.jsonl: the file itself, byte for byte
    out = tmp_path / "ordered.jsonl"
    result = runner.invoke(app, ["attribution", "data", "order", str(HOPS_CORPUS), "--out", str(out), "--ascii"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == HOPS_CORPUS.read_bytes()
    shuffled_file = tmp_path / "shuffled.jsonl"
    assert runner.invoke(app, ["attribution", "data", "order", str(HOPS_CORPUS), "--out", str(shuffled_file),
                               "--shuffle", "--seed", "1"]).exit_code == 0
    assert funcs(ops.read_records(shuffled_file)) == funcs(ops.order(shipped, "shuffle", seed=1))


def test_leftovers_and_default_cycle():
    records = [{"func": f, "hop_depth": int(f not in ("<GN>", "<JN>")), "role": "constant", "constant": 5, "text": t,
                "wraps": w}
               for f, t, w in [("<GN>", "1", None), ("<GN>", "2", None), ("<GN>", "3", None), ("<JN>", "4", None),
                               ("<FN>", "<GN>", "<GN>"), ("<IN>", "<JN>", "<JN>")]]
    # exhausted letters are skipped, the cycle goes on; functions outside the pattern come last
    assert [r["text"] for r in ops.order(records, "GJ")] == ["1", "4", "2", "3", "<GN>", "<JN>"]
    assert funcs(ops.order(records, None)) == ["<GN>", "<FN>", "<JN>", "<IN>", "<GN>", "<GN>"]


def test_unknown_letter_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="pattern letter 'Z'"):
        ops.order(ops.read_records(HOPS_CORPUS), "GJZ")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["attribution", "data", "order", str(HOPS_CORPUS), "--out", str(out),
                                 "--pattern", "G J Z"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert not out.exists()


def test_combine_split_round_trip(tmp_path):
    shipped = ops.read_records(HOPS_CORPUS)
    out_dir = tmp_path / "split"
    result = runner.invoke(app, ["attribution", "data", "split", str(HOPS_CORPUS), "--by", "depth",
                                 "--out-dir", str(out_dir)])
    assert result.exit_code == 0, result.output
    parts = sorted(out_dir.iterdir())
    assert [p.name for p in parts] == ["20hops_depth0.jsonl", "20hops_depth1.jsonl"]
    assert [len(ops.read_records(p)) for p in parts] == [2000, 1000]
    for part in parts:  # the original's split files, byte for byte
        if (SHARED / part.name).is_file():
            assert part.read_bytes() == (SHARED / part.name).read_bytes()
    combined = tmp_path / "combined.jsonl"
    result = runner.invoke(app, ["attribution", "data", "combine", *map(str, parts), "--out", str(combined)])
    assert result.exit_code == 0, result.output
    back = ops.read_records(combined)
    assert sorted(map(json.dumps, back)) == sorted(map(json.dumps, shipped))
    assert ops.order(back, "released") == shipped  # ordering the halves again gives the released corpus
    dedup = ops.combine([HOPS_CORPUS, HOPS_CORPUS], dedup=True)
    assert len(dedup) == 3000 - 71
    assert len(ops.combine([HOPS_CORPUS, HOPS_CORPUS])) == 6000
    mixed = ops.combine([HOPS_CORPUS], shuffle=True, seed=2)
    assert mixed != shipped and sorted(map(json.dumps, mixed)) == sorted(map(json.dumps, shipped))
    deduped = tmp_path / "dedup.jsonl"
    assert runner.invoke(app, ["attribution", "data", "combine", str(HOPS_CORPUS), str(HOPS_CORPUS), "--dedup",
                               "--shuffle", "--seed", "4", "--out", str(deduped)]).exit_code == 0
    assert len(ops.read_records(deduped)) == 2929
    assert ops.split_by_depth(shipped).keys() == {0, 1}
    with pytest.raises(UsageError, match="hop_depth"):
        ops.split_by_depth([{"text": "x"}])
    bad_by = runner.invoke(app, ["attribution", "data", "split", str(HOPS_CORPUS), "--by", "func",
                                 "--out-dir", str(out_dir)])
    assert bad_by.exit_code == 2 and bad_by.stderr.count("\n") == 1


def test_normalise_tokens(tmp_path):
    shipped = ops.read_records(HOPS_CORPUS)
    normal = ops.normalise_tokens(shipped)
    assert all("<GN>" not in r["text"] for r in normal) and normal[0]["func"] == "<GN>"
    assert shipped[0]["text"].count("<GN>") == normal[0]["text"].count("GN") and "<GN>" in shipped[0]["text"]
    every = ops.normalise_tokens([{"text": "<FN> calls <GN>", "func": "<FN>", "wraps": "<GN>"}],
                                 ("text", "func", "wraps"))
    assert every == [{"text": "FN calls GN", "func": "FN", "wraps": "GN"}]
    out = tmp_path / "normal.jsonl"
    result = runner.invoke(app, ["attribution", "data", "normalise-tokens", str(HOPS_CORPUS), "--out", str(out)])
    assert result.exit_code == 0, result.output
    if (SHARED / "20hops_normal_toks.jsonl").is_file():
        reference = (SHARED / "20hops_normal_toks.jsonl").read_bytes()
        original = [json.loads(line) for line in reference.decode().splitlines()]
        # the texts are reproduced exactly from 20hops.jsonl ...
        assert [r["text"] for r in ops.read_records(out)] == [r["text"] for r in original]
        # ... and the whole file, byte for byte, from the first 3000 lines of the 6k file (whose rows of G J K F I H
        # carry `func_type`/`wraps`, as the reference does; 20hops.jsonl lacks them)
        head = tmp_path / "head.jsonl"
        head.write_text("".join(HOPS_CORPUS_6K.read_text().splitlines(keepends=True)[:3000]))
        out6 = tmp_path / "normal6.jsonl"
        assert runner.invoke(app, ["attribution", "data", "normalise-tokens", str(head),
                                   "--out", str(out6)]).exit_code == 0
        assert out6.read_bytes() == reference


def test_writes_are_atomic(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    records = ops.read_records(HOPS_CORPUS)[:10]
    records.append({"text": object()})  # not serialisable: fails before anything is written
    with pytest.raises(TypeError):
        ops.write_records(out, records)
    assert out.read_text() == "old\n"

    import tunelens.runs as runs

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(runs.os, "replace", failing_replace)
    result = runner.invoke(app, ["attribution", "data", "order", str(HOPS_CORPUS), "--out", str(out)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    split_dir = tmp_path / "split"
    result = runner.invoke(app, ["attribution", "data", "split", str(HOPS_CORPUS), "--out-dir", str(split_dir)])
    assert result.exit_code == 2 and list(split_dir.iterdir()) == []


def test_shuffled_order_is_seeded():
    records = [{"func": "<GN>", "text": str(i)} for i in range(50)]
    assert ops.order(records, "shuffle", 7) == ops.order(records, "shuffle", 7)
    expected = list(records)
    random.Random(7).shuffle(expected)
    assert ops.order(records, "shuffle", 7) == expected
