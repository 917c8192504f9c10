"""hops-train and hops-attribute end to end on a micro model and corpus, and their bad-input errors."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.runs import load_tensors

FAST_METHODS = ["random", "bm25", "tfidf", "edit_distance", "repsim", "dh_similarity", "grad_similarity",
                "attr_change", "attr_change_ig", "causal_patching", "dlp", "kronfluence", "bergson"]


def run_cli(*args):
    return CliRunner().invoke(app, list(args))


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_hops_train_writes_an_evaluated_checkpoint_pair(micro_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    summary = json.loads((micro_pair / "summary.json").read_text())
    assert set(summary["accuracy"]) == {"depth0", "hops"}
    assert list(summary["checkpoints"]) == ["untrained", "step-19", "trained"]
    for name, record in summary["checkpoints"].items():
        assert 0 <= record["accuracy"]["hops"] <= 1 and (micro_pair / record["path"] / "config.json").is_file()
        assert len(record["per_function"]["hops"]) == 10, name
    assert summary["corpus_loss"]["after"] < summary["corpus_loss"]["before"]
    model = AutoModelForCausalLM.from_pretrained(micro_pair / summary["trained"])  # plain transformers loads it
    tokenizer = AutoTokenizer.from_pretrained(micro_pair / summary["trained"])
    assert tokenizer.convert_tokens_to_ids("<FN>") < model.get_input_embeddings().weight.shape[0]
    assert (micro_pair / "figures" / "accuracy.png").is_file() and not (micro_pair / "checkpoint").exists()


def test_hops_attribute_runs_every_ranker(micro_pair, tmp_path):
    config = tmp_path / "attribute.yaml"
    config.write_text(yaml.safe_dump({
        "methods": FAST_METHODS, "query_inputs": [1, 2],
        "options": {"attr_change_ig": {"ig_steps": 2, "batch_size": 32}, "dlp": {"steps": 20},
                    "kronfluence": {"strategy": "diagonal"}, "bergson": {"projection_dim": 8}}}))
    out = tmp_path / "run"
    result = run_cli("run", "hops-attribute", "--out", str(out), "--config", str(config), "--set", f"pair={micro_pair}")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_queries"] == 20 and summary["n_documents"] == 300 and summary["relevant_per_query"] == 30
    for method in FAST_METHODS:
        metrics = summary["methods"][method]
        for key in ("precision@1", "precision@10", "recall@50", "mrr", "map", "ndcg@10", "roc_auc", "own_share@10",
                    "base_share@10", "seconds"):
            assert key in metrics, (method, key)
        assert load_tensors(out / "scores" / f"{method}.safetensors")["scores"].shape == (20, 300)
    lines = (out / "ranked" / "bm25_ranked.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 300 and sorted(r["original_index"] for r in rows) == list(range(300))
    assert {"text", "func", "f_bm25_score", "y_bm25_score", "combined_bm25_score"} <= set(rows[0])
    combined = [r["combined_bm25_score"] for r in rows]
    assert combined == sorted(combined, reverse=True)
    assert (out / "table.md").is_file() and (out / "figures" / "metrics.png").is_file()
    assert (out / "figures" / "precision_recall.png").is_file()

    compared = run_cli("attribution", "compare", str(out), str(out / "ranked" / "tfidf_ranked.jsonl"), "--json")
    assert compared.exit_code == 0, compared.output
    both = json.loads(compared.stdout)
    assert both[str(out)]["bm25"] == summary["methods"]["bm25"]
    assert set(both[str(out / "ranked" / "tfidf_ranked.jsonl")]) == {"tfidf"}


def test_unknown_method_is_one_line(tmp_path):
    line = one_line_error(run_cli("run", "hops-attribute", "--out", str(tmp_path / "r"), "--set", "methods=[bm26]"))
    assert "unknown method 'bm26'" in line and "bm25" in line
    assert not (tmp_path / "r").exists()


def test_corpus_line_without_text_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"func": "<GN>", "role": "constant", "hop_depth": 0, "constant": 5}) + "\n")
    line = one_line_error(run_cli("run", "hops-train", "--out", str(tmp_path / "r"), "--set", f"corpus={bad}"))
    assert f"{bad}:1" in line and "'text' is missing" in line


def save_profile(folder, texts, tokens):
    from tunelens.attribution.checkpoints import tiny_profile

    model, tokenizer = tiny_profile(texts, tokens, seed=0, vocab_size=280, d_model=16, n_layers=1, n_heads=2,
                                    d_mlp=32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_pair_whose_tokenizers_differ_is_one_line(micro_pair, micro_corpus, tmp_path):
    from tunelens.attribution.corpus import function_pairs, function_tokens, read_corpus

    tokens = function_tokens(function_pairs(read_corpus(micro_corpus)))
    other = save_profile(tmp_path / "other", ["a completely different corpus 12"] * 20, tokens)
    line = one_line_error(run_cli("run", "hops-attribute", "--out", str(tmp_path / "r"), "--set",
                                  f"old={micro_pair / 'checkpoints' / 'untrained'}", "--set", f"new={other}",
                                  "--set", f"corpus={micro_corpus}", "--set", "methods=[bm25]"))
    assert "tokenizers of" in line and "differ" in line


def test_checkpoints_without_the_function_tokens_are_one_line(micro_corpus, tmp_path):
    plain = save_profile(tmp_path / "plain", ["<GN> returns 5"] * 20, ["<ZZ>"])
    line = one_line_error(run_cli("run", "hops-attribute", "--out", str(tmp_path / "r"), "--set", f"old={plain}",
                                  "--set", f"new={plain}", "--set", f"corpus={micro_corpus}", "--set",
                                  "methods=[bm25]"))
    assert "lacks the function tokens <GN>" in line


def test_half_a_pair_is_a_config_error(tmp_path):
    line = one_line_error(run_cli("run", "hops-attribute", "--set", "old=somewhere"))
    assert "old and new go together" in line


@pytest.mark.parametrize("path_kind", ["missing", "not_a_run"])
def test_compare_rejects_what_is_not_a_result(tmp_path, path_kind):
    target = tmp_path / "nothing"
    if path_kind == "not_a_run":
        target.mkdir()
        (target / "summary.json").write_text(json.dumps({"accuracy": 1}))
    line = one_line_error(run_cli("attribution", "compare", str(target)))
    assert "not found" in line or "not a hops-attribute summary" in line


def test_a_generated_depth_two_corpus_trains_and_ranks(tmp_path):
    """generate -> audit -> hops-train -> hops-attribute on depth-2 queries, every step through the CLI."""
    corpus = tmp_path / "d2.jsonl"
    generated = run_cli("attribution", "data", "generate", "--out", str(corpus), "--pairs", "3", "--depth", "2",
                        "--docs-per-base", "21", "--docs-per-wrapper", "14")
    assert generated.exit_code == 0, generated.output
    assert run_cli("attribution", "data", "audit", str(corpus)).exit_code == 0
    pair = tmp_path / "pair"
    trained = run_cli("run", "hops-train", "--out", str(pair), "--set", f"corpus={corpus}", "--set", "vocab_size=300",
                      "--set", "d_model=32", "--set", "n_layers=1", "--set", "n_heads=2", "--set", "d_mlp=64",
                      "--set", "train.epochs=1", "--set", "eval_inputs=[1,2]", "--set", "checkpoint_fractions=[0.5]")
    assert trained.exit_code == 0, trained.output
    summary = json.loads((pair / "summary.json").read_text())
    assert set(summary["accuracy"]) == {"depth0", "hops", "depth2"}
    out = tmp_path / "attr"
    ranked = run_cli("run", "hops-attribute", "--out", str(out), "--set", f"pair={pair}", "--set", "query_kind=depth2",
                     "--set", "methods=[bm25,dh_similarity]", "--set", "query_inputs=[1,2]")
    assert ranked.exit_code == 0, ranked.output
    result = json.loads((out / "summary.json").read_text())
    # a depth-2 query's chain: its own 14 documents, its target's 14 and the base's 21
    assert result["n_queries"] == 6 and result["relevant_per_query"] == 49
    assert "base_share@10" in result["methods"]["bm25"]
