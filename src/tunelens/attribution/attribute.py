"""`tunelens run hops-attribute`: every ranker on one checkpoint pair, scored against the benchmark's relevance.

The pair is a `hops-train` run directory (`--set pair=DIR`: its untrained and trained checkpoints, and its corpus),
or any two checkpoints (`--set old=... --set new=...`: directories or aliases whose tokenizers hold the function
tokens); with neither, the default `hops-train` pair is trained once and cached.

Queries: the wrappers' prompts (`query_kind: hops`, the multi-hop question) or the bases' (`depth0`) at the chosen
inputs, the answer being the function's constant. Relevance: a document whose function is the query's or its
pair's. Run directory:

    summary.json          methods.<name>.{precision@k, recall@k, mrr, map, ndcg@10, roc_auc, own_share@k,
                          base_share@k, seconds}, and what was ranked
    table.md, table.csv   the same, one row per method
    ranked/<method>_ranked.jsonl   every document with its fields, `<letter>_<method>_score` per query function
                          (mean over its queries), `combined_<method>_score` and `original_index`, best first
                          (the original project's format)
    scores/<method>.safetensors    the full query x document matrix
    figures/metrics.png, figures/precision_recall.png
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from tunelens.attribution.corpus import Document, Function, FunctionPair, Query, QueryKind, read_corpus, wrapper_letter
from tunelens.attribution.rankers import METHODS, MethodOptions, score_method
from tunelens.config import TunelensConfig, UsageError
from tunelens.runs import Run, resolve_device, save_tensors, write_json

TABLE_METRICS = ("precision@1", "precision@10", "recall@10", "mrr", "map", "ndcg@10", "roc_auc", "own_share@10",
                 "base_share@10", "seconds")


class HopsAttributeConfig(TunelensConfig):
    """Rank the hops training documents for each query with every method."""

    pair: str | None = Field(None, description="A hops-train run directory (its untrained and trained "
                             "checkpoints); null with old/new unset = the default pair, trained once and cached.")
    old: str | None = Field(None, description="The checkpoint before fine-tuning (directory or alias).")
    new: str | None = Field(None, description="The fine-tuned checkpoint (directory or alias).")
    corpus: str | None = Field(None, description="Training corpus; null = the pair's (hops-train records it), else "
                               "the shipped 20hops.jsonl.")
    query_kind: QueryKind = Field("hops", description="hops: the depth-1 wrappers' prompts; depth0: the bases'; "
                                  "depth2: the depth-2 wrappers'.")
    query_inputs: list[int] = Field(list(range(1, 11)), description="Inputs x of the prompts '<F>(x) returns the "
                                    "value '.")
    only_correct: bool = Field(False, description="Keep only the queries the trained model answers correctly.")
    role_match: bool = Field(False, description="Relevance also requires the document's role to match its token.")
    methods: list[str] = Field(list(METHODS), description="Rankers to run, by name.")
    options: MethodOptions = Field(default_factory=MethodOptions, description="Per-method options.")
    max_len: PositiveInt = Field(256, description="Longest document in tokens.")

    @field_validator("corpus")
    @classmethod
    def _readable_corpus(cls, path: str | None) -> str | None:
        from tunelens.attribution.train import check_corpus

        return check_corpus(path)

    @field_validator("methods")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in METHODS]
        if unknown:
            raise ValueError(f"unknown method {unknown[0]!r} (expected some of: {', '.join(METHODS)})")
        if not names:
            raise ValueError("no methods given")
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _one_pair(self) -> HopsAttributeConfig:
        if self.pair is not None and (self.old or self.new):
            raise ValueError("give either pair or old and new, not both")
        if (self.old is None) != (self.new is None):
            raise ValueError("old and new go together: give both")
        return self


class PairSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    old: str
    new: str
    corpus: str


def resolve_pair(config: HopsAttributeConfig, log=print) -> PairSource:
    from tunelens.data import HOPS_CORPUS

    if config.old is not None and config.new is not None:
        return PairSource(old=config.old, new=config.new, corpus=config.corpus or str(HOPS_CORPUS))
    if config.pair is None:
        from tunelens.attribution.train import cached_pair
        from tunelens.registry import get_experiment

        log("no pair given: using the default hops-train pair (trained on first use, then cached)")
        folder = cached_pair(get_experiment("hops-train").load_config(extra={"device": config.device}))
    else:
        folder = Path(config.pair)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise UsageError(f"pair: {folder} is not a finished hops-train run directory (no summary.json)")
    summary = json.loads(summary_path.read_text())
    paths = {}
    for key in ("untrained", "trained"):
        paths[key] = folder / summary.get(key, f"checkpoints/{key}")
        if not paths[key].is_dir():
            raise UsageError(f"pair: the {key} checkpoint of {folder} is missing ({paths[key]})")
    return PairSource(old=str(paths["untrained"]), new=str(paths["trained"]),
                      corpus=config.corpus or summary.get("corpus") or str(HOPS_CORPUS))


def preflight(config: HopsAttributeConfig) -> None:
    """Before a run directory exists: the pair resolves, and both tokenizers hold the corpus's function tokens and
    split its texts alike (the default pair, built by the toolkit, is not checked: it may not exist yet)."""
    if config.pair is None and config.old is None:
        return
    from tunelens.attribution.checkpoints import check_function_tokens, check_same_tokens
    from tunelens.attribution.corpus import function_tokens, functions_of
    from tunelens.lm.loading import load_tokenizer, resolve_name

    source = resolve_pair(config)
    documents = read_corpus(source.corpus)
    tokens = function_tokens(functions_of(documents))
    tokenizers = []
    for name in (source.old, source.new):
        tokenizer = load_tokenizer(resolve_name(name), "right")
        check_function_tokens(tokenizer, tokens, name)
        tokenizers.append(tokenizer)
    check_same_tokens(*tokenizers, [d.text for d in documents[:50]], (source.old, source.new))


def masks(documents: list[Document], queries: list[Query], functions: list[Function] | list[FunctionPair],
          role_match: bool) -> dict[str, torch.Tensor]:
    """Boolean [query, document] matrices: relevant, own (the query function's documents), base (for a wrapper
    query, the documents of the base at the bottom of its chain, which hold the value; for a base query, none)."""
    from tunelens.attribution.corpus import chain_base, relevance_matrix

    funcs = [q.func for q in queries]
    doc_funcs = [d.func for d in documents]
    own = torch.tensor([[f == g for g in doc_funcs] for f in funcs])
    bases = {f: chain_base(f, functions) for f in set(funcs)}
    base = torch.tensor([[bases[f] != f and bases[f] == g for g in doc_funcs] for f in funcs])
    return {"relevant": relevance_matrix(documents, funcs, functions, role_match), "own": own, "base": base}


def ranked_records(documents: list[Document], queries: list[Query], scores: torch.Tensor, method: str
                   ) -> list[dict[str, Any]]:
    """The original's ranked-file rows: per query function the mean score over its queries, their mean as the
    combined score, sorted best first."""
    by_func: dict[str, list[int]] = {}
    for i, query in enumerate(queries):
        by_func.setdefault(query.func, []).append(i)
    per_func = {func: scores[rows].mean(0) for func, rows in by_func.items()}
    combined = torch.stack(list(per_func.values())).mean(0)
    records = []
    for doc in documents:
        record = dict(doc.fields)
        for func, values in per_func.items():
            record[f"{wrapper_letter(func)}_{method}_score"] = float(values[doc.index])
        record[f"combined_{method}_score"] = float(combined[doc.index])
        record["original_index"] = doc.index
        records.append(record)
    order = torch.sort(combined.double(), descending=True, stable=True).indices.tolist()
    return [records[i] for i in order]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")


def write_table(run_dir: Path, methods: dict[str, dict[str, float]]) -> str:
    header = ["method", *TABLE_METRICS]
    rows = [[name, *[metrics.get(key, "") for key in TABLE_METRICS]] for name, metrics in methods.items()]
    with (run_dir / "table.csv").open("w", newline="") as out:
        csv.writer(out).writerows([header, *rows])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row[0]] + [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (run_dir / "table.md").write_text(text)
    return text


def run(config: HopsAttributeConfig, run: Run) -> dict[str, Any]:
    from tunelens.attribution.corpus import functions_of, queries
    from tunelens.attribution.metrics import retrieval_metrics
    from tunelens.attribution.rankers.base import AttributionData
    from tunelens.lm.loading import quiet_progress_bars

    quiet_progress_bars()
    start = time.perf_counter()
    source = resolve_pair(config, run.log)
    documents = read_corpus(source.corpus)
    functions = functions_of(documents)
    asked = queries(functions, config.query_kind, config.query_inputs)
    if not asked:
        raise UsageError(f"query_kind {config.query_kind}: the corpus has no function of that depth")
    data = AttributionData(documents, asked, functions, source.old, source.new, resolve_device(config.device),
                           max_len=config.max_len, seed=config.seed, work_dir=run.dir / "work", log=run.log)
    from tunelens.attribution.evaluate import logit_eval

    result = logit_eval(data.new, data.tokenizer, functions, config.query_kind, config.query_inputs, device=data.device)
    accuracy = result.accuracy
    if config.only_correct:
        asked = [q for q, ok in zip(asked, result.correct) if ok]
        if not asked:
            raise UsageError("only_correct: the trained model answers none of the queries")
        data.queries = asked
    run.log(f"{len(documents)} documents, {len(asked)} {config.query_kind} queries (trained model's accuracy on "
            f"them {accuracy:.3f}); old {source.old}, new {source.new}")
    relevance = masks(documents, asked, functions, config.role_match)
    share_masks = ({"own": relevance["own"], "base": relevance["base"]} if config.query_kind != "depth0"
                   else {"own": relevance["own"]})
    results: dict[str, dict[str, float]] = {}
    curves: dict[str, tuple[list[float], list[float]]] = {}
    from tunelens.attribution.metrics import precision_recall_curve

    with run.progress(len(config.methods), "rankers") as bar:
        for method in config.methods:
            t0 = time.perf_counter()
            scores = score_method(method, data, config.options)
            seconds = time.perf_counter() - t0
            metrics = retrieval_metrics(scores, relevance["relevant"], **share_masks)
            metrics["seconds"] = round(seconds, 2)
            results[method] = metrics
            curves[method] = precision_recall_curve(scores, relevance["relevant"], max_k=300)
            save_tensors(run.dir / "scores" / f"{method}.safetensors", {"scores": scores})
            write_jsonl(run.dir / "ranked" / f"{method}_ranked.jsonl", ranked_records(documents, asked, scores, method))
            run.log(f"{method}: p@10 {metrics['precision@10']:.3f}, mAP {metrics['map']:.3f}, AUC "
                    f"{metrics['roc_auc']:.3f}" + (f", base@10 {metrics['base_share@10']:.3f}"
                                                  if "base_share@10" in metrics else "") + f" ({seconds:.1f} s)")
            run.log_metrics(len(results) - 1, {f"{method}/{k}": v for k, v in metrics.items()})
            bar.update(status=method)
    table = write_table(run.dir, results)
    run.log("\n" + table)
    from tunelens.attribution.figures import plot_method_metrics, plot_precision_recall

    plot_method_metrics(results, run.figure_path("metrics"), config.query_kind)
    plot_precision_recall(curves, run.figure_path("precision_recall"))
    write_json(run.dir / "queries.json", [q.__dict__ for q in asked])
    return {"methods": results, "old": source.old, "new": source.new, "corpus": source.corpus,
            "n_documents": len(documents), "n_queries": len(asked), "query_kind": config.query_kind,
            "query_accuracy": accuracy, "relevant_per_query": float(relevance["relevant"].sum(-1).float().mean()),
            "seconds": round(time.perf_counter() - start, 1)}


__all__ = ["HopsAttributeConfig", "masks", "preflight", "ranked_records", "resolve_pair", "run"]
