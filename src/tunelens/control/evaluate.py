"""`tunelens run output-control` / `tunelens control eval`: the output-control evaluation of one or more models.

For each model: the samples' prompts, one batched probe of the next-token distribution, both scoring modes, and
the reference strategies on the same samples. The run directory gets

    results_<model>.json.gz   every sample's readout and scores (compressed: SAD-derived text)
    results.json              the aggregates of every model and the references
    pass_rates.csv            model, case, mode, n, n_skipped, n_pass, pass_rate
    mean_tvd.csv              model, case, mode, mean_tvd
    figures/pass_rate.png, figures/achieved_vs_requested.png
    summary.json              cases.<case>.<mode>.pass_rate, cases.<case>.mean_tvd (one model; `models.<m>.…`
                              for each), baselines.{oracle,fifty_fifty}.cases.<case>.<mode>.pass_rate

Default samples come from the evaluation half of the word list, restricted to words that every evaluated
tokenizer spells as one token after the prefill, so every model answers the same samples; with the `sad` set the
words are fixed and a word a tokenizer splits skips its samples (counted in `n_skipped`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt, ValidationInfo, field_validator

from tunelens.config import TunelensConfig, UsageError
from tunelens.control.samples import CASES, Case, Sample
from tunelens.lm.examples import ChatMode
from tunelens.runs import Run, atomic_write_text, resolve_device, write_json

SampleSet = Literal["default", "sad"]


class OutputControlConfig(TunelensConfig):
    """Output-control evaluation of causal LMs (SAD's task, both scoring modes, reference strategies)."""

    # models
    models: list[str] = Field(default_factory=lambda: ["tiny-stories"], min_length=1,
                              description="'tiny-stories', aliases, hub ids or directories.")
    adapter: str | None = Field(None, description="peft LoRA adapter directory applied to each model (it must "
                                "have been trained on that base).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights' dtype.")
    quantize: Literal["4bit", "8bit"] | None = Field(None, description="bitsandbytes loading on CUDA (4bit: nf4 "
                                                     "with double quantisation).")
    # prompts
    chat: ChatMode = Field("auto", description="Chat template with a real prefill (auto: when the tokenizer has "
                           "one); otherwise messages joined by blank lines, then the prefill.")
    prompt_style: Literal["tunelens", "sad"] = Field("tunelens", description="The project's own wording, or "
                                                     "SAD's templates and in-context examples.")
    prefill: str | None = Field(None, description="Text the answer follows; null = the style's ('My answer is:').")
    few_shot: bool = Field(True, description="The style's example turns before the question; false drops them "
                           "(for models whose context is shorter than the prompt).")
    # samples
    sample_set: SampleSet = Field("default", description="default: held-out words and seeds; sad: SAD's draws.")
    cases: list[Case] = Field(default_factory=lambda: list(CASES), min_length=1, description="Cases to run.")
    num_examples: PositiveInt = Field(10, description="Word pairs / seeds per case; each makes 10 samples "
                                      "(p x r grid).")
    eval_frac: float = Field(0.5, gt=0, lt=1, description="Share of the word list kept for evaluation (default "
                             "set); the rest is for training.")
    sample_seed: NonNegativeInt = Field(0, description="Seed of the word split and the default draws.")
    # probe
    top_k: PositiveInt = Field(20, description="Merged entries kept per prompt (SAD mode reads the top 2).")
    batch_size: PositiveInt = Field(32, description="Prompts per forward pass.")

    @field_validator("adapter")
    @classmethod
    def _adapter_fits_every_model(cls, adapter: str | None, info: ValidationInfo) -> str | None:
        from tunelens.control.models import check_adapter_base, expected_source

        if adapter is not None:
            for name in info.data.get("models", []):
                try:
                    check_adapter_base(adapter, expected_source(name))
                except UsageError as err:
                    raise ValueError(str(err)) from None
        return adapter

    @field_validator("cases", mode="before")
    @classmethod
    def _known_cases(cls, names: Any) -> Any:
        if isinstance(names, list):
            unknown = [n for n in names if n not in CASES]
            if unknown:
                raise ValueError(f"unknown case '{unknown[0]}' (known: {', '.join(CASES)})")
        return names


# -------------------------------------------------------------------------------------------------- samples


def usable_words(tokenizers: Sequence[Any], words: Sequence[str], prefill: str) -> list[str]:
    """Words every tokenizer spells as one token right after the prefill, in list order."""
    from tunelens.control.probe import answer_tokens

    keep = set(words)
    for tokenizer in tokenizers:
        tokens = answer_tokens(tokenizer, words, prefill)
        keep &= {w for w, t in tokens.items() if t is not None}
    return [w for w in words if w in keep]


def draw_eval_samples(sample_set: SampleSet, tokenizers: Sequence[Any], prefill: str, cases: Sequence[Case],
                      n_items: int, eval_frac: float, sample_seed: int, log: Callable[[str], None]) -> list[Sample]:
    from tunelens.control.data import sad_words
    from tunelens.control.samples import default_samples, sad_samples, split_words

    words = sad_words()
    if sample_set == "sad":
        return sad_samples(words, n_items, cases)
    _, eval_words = split_words(words, eval_frac, sample_seed)
    usable = usable_words(tokenizers, eval_words, prefill)
    log(f"default samples: {len(usable)} of the {len(eval_words)} evaluation words are one token after "
        f"{prefill!r} for every tokenizer")
    return default_samples(usable, n_items, "eval", sample_seed, cases)


# ------------------------------------------------------------------------------------------------- scoring


def evaluate_model(model, tokenizer, samples: Sequence[Sample], style, chat: ChatMode, top_k: int, batch_size: int,
                   device: torch.device | str, log: Callable[[str], None] = lambda m: None) -> list[dict[str, Any]]:
    """One record per sample, in order: scored in both modes, or skipped with the reason."""
    from tunelens.control.probe import answer_tokens, probe, vocab_index
    from tunelens.control.prompts import encode_samples, over_context
    from tunelens.control.scoring import score_record, skipped_record
    from tunelens.lm.loading import context_length

    given_words = sorted({w for s in samples if s.is_given for w in s.words})
    tokens = answer_tokens(tokenizer, given_words, style.prefill)
    split_words_found = sorted(w for w, t in tokens.items() if t is None)
    usable = [s for s in samples if not s.is_given or all(tokens[w] is not None for w in s.words)]
    index = vocab_index(tokenizer, model.config.vocab_size)
    target_keys = torch.tensor([[int(index.key_of_token[tokens[w]]) for w in s.words] if s.is_given else [-1, -1]
                                for s in usable], dtype=torch.long).view(-1, 2)
    prompts = encode_samples(tokenizer, usable, style, chat)
    if (warning := over_context(prompts, context_length(model))) is not None:
        log(warning)
    readout = probe(model, prompts, tokenizer.pad_token_id, index, target_keys, top_k, batch_size, device)
    scored = {}
    for row, sample in enumerate(usable):
        top = [(index.keys[k], p) for k, p in zip(readout.top_keys[row].tolist(), readout.top_probs[row].tolist())]
        word_texts = tuple(index.keys[k] for k in readout.word_keys[row].tolist())
        scored[id(sample)] = score_record(sample, top, tuple(readout.target_probs[row].tolist()),
                                          tuple(readout.word_probs[row].tolist()), word_texts)
    if split_words_found:
        n_skipped = len(samples) - len(usable)
        log(f"{n_skipped} of {len(samples)} samples skipped: {len(split_words_found)} given word(s) take more than "
            f"one token after {style.prefill!r} in this tokenizer, so they have no single next-token probability "
            f"(not scored by a first piece; the words are in the compressed per-sample results)")
    reason = "a given word takes more than one token after the prefill"
    return [scored.get(id(s)) or skipped_record(s, reason) for s in samples]


def references(samples: Sequence[Sample], cases: Sequence[Case]) -> dict[str, Any]:
    from tunelens.control.scoring import REFERENCES, reference_records, summarise

    return {name: {"cases": summarise(reference_records(samples, name), cases)} for name in REFERENCES}


def n_single_token_words(tokenizer, prefill: str) -> int:
    from tunelens.control.data import sad_words
    from tunelens.control.probe import answer_tokens

    return sum(t is not None for t in answer_tokens(tokenizer, sad_words(), prefill).values())


# ---------------------------------------------------------------------------------------------------- files

def table_rows(name: str, cases_summary: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    from tunelens.control.scoring import MODES

    passes, tvds = [], []
    for case, entry in cases_summary.items():
        for mode in MODES:
            passes.append([name, case, mode, entry["n"], entry["n_skipped"], entry[mode]["n_pass"],
                           entry[mode]["pass_rate"]])
            tvds.append([name, case, mode, entry[mode]["mean_tvd"]])
    return passes, tvds


def write_csv(path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row]
                      for row in rows])
    atomic_write_text(path, buffer.getvalue())


def write_tables(run: Run, per_model: dict[str, dict[str, Any]], refs: dict[str, Any]) -> None:
    pass_rows, tvd_rows = [], []
    for name, result in [*per_model.items(), *((f"reference:{n}", r) for n, r in refs.items())]:
        passes, tvds = table_rows(name, result["cases"])
        pass_rows += passes
        tvd_rows += tvds
    write_csv(run.dir / "pass_rates.csv", ["model", "case", "mode", "n", "n_skipped", "n_pass", "pass_rate"],
              pass_rows)
    write_csv(run.dir / "mean_tvd.csv", ["model", "case", "mode", "mean_tvd"], tvd_rows)


# ------------------------------------------------------------------------------------------------------ run


def run(config: OutputControlConfig, run: Run) -> dict[str, Any]:
    from tunelens.control import figures
    from tunelens.control.data import write_gzip_json
    from tunelens.control.models import check_adapter_base, load, resolve_source, slug
    from tunelens.control.prompts import prompt_style
    from tunelens.control.scoring import summarise
    from tunelens.lm.loading import load_tokenizer

    device = resolve_device(config.device)
    style = prompt_style(config.prompt_style, config.prefill, config.few_shot)
    sources = {name: resolve_source(name) for name in config.models}
    if config.adapter is not None:  # before anything slow
        for source in sources.values():
            check_adapter_base(config.adapter, source)
    tokenizers = {name: load_tokenizer(source, padding_side="right") for name, source in sources.items()}
    samples = draw_eval_samples(config.sample_set, list(tokenizers.values()), style.prefill, config.cases,
                                config.num_examples, config.eval_frac, config.sample_seed, run.log)
    if not samples:
        raise UsageError("no samples to evaluate")
    refs = references(samples, config.cases)
    per_model: dict[str, dict[str, Any]] = {}
    for name in config.models:
        model, tokenizer, source = load(name, config.dtype, device, config.quantize, config.adapter)
        n_words = n_single_token_words(tokenizer, style.prefill)
        run.log(f"{name} ({source}{' + adapter ' + config.adapter if config.adapter else ''}): {n_words} of the "
                f"word list's words are one token after {style.prefill!r}; {len(samples)} samples")
        records = evaluate_model(model, tokenizer, samples, style, config.chat, config.top_k, config.batch_size,
                                 device, run.log)
        scored = [s for s, r in zip(samples, records) if r["skipped"] is None]
        result = {"source": source, "adapter": config.adapter, "n_single_token_words": n_words,
                  "cases": summarise(records, config.cases), "baselines": references(scored, config.cases)}
        per_model[name] = result
        write_gzip_json(run.dir / f"results_{slug(name)}.json.gz", {"model": name, **result, "records": records})
        for case, entry in result["cases"].items():
            run.log(f"  {case}: n={entry['n']} skipped={entry['n_skipped']} "
                    f"pass sad={_fmt(entry['sad']['pass_rate'])} aligned={_fmt(entry['aligned']['pass_rate'])} "
                    f"mean aligned TVD={_fmt(entry['mean_tvd'])}")
        del model
    combined = {"models": per_model, "baselines": refs, "sample_set": config.sample_set,
                "prompt_style": config.prompt_style, "n_samples": len(samples)}
    write_json(run.dir / "results.json", combined)
    write_tables(run, per_model, refs)
    figures.pass_rates(run.figure_path("pass_rate"), {n: r["cases"] for n, r in per_model.items()}, refs)
    figures.achieved_vs_requested(run.figure_path("achieved_vs_requested"),
                                  {n: r["cases"] for n, r in per_model.items()})
    summary = dict(combined)
    if len(per_model) == 1:
        only = next(iter(per_model.values()))
        summary.update(cases=only["cases"], n_single_token_words=only["n_single_token_words"])
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
