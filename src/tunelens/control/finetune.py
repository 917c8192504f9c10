"""`tunelens run output-control-finetune` / `tunelens control finetune`: LoRA fine-tuning with a TVD (or KL) loss
at the answer position, evaluated on held-out samples before and after.

Training samples come from the training half of the word list and even seeds, evaluation samples from the other
half and odd seeds (`tunelens.control.samples`), so no evaluation word, pair or seed is seen in training. Training
prompts are rendered exactly as evaluation prompts (chat template and prefill included). Each training row is the
prompt alone; the loss (`tunelens.control.losses`) reads the distribution after its last real token, through the
shared loop's `Hooks.row_loss`.

The run directory gets the standard files, `adapter/` (a peft adapter directory naming its base, with the
tokenizer), `eval_before.json.gz` and `eval_after.json.gz` (per-sample readouts, compressed), a before/after
figure, and `summary.json` with `before.cases.<case>…` and `after.cases.<case>…` in the evaluation's shape.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt

from tunelens.config import TunelensConfig, UsageError, config_hash
from tunelens.control.losses import LossKind
from tunelens.control.samples import CASES, Case
from tunelens.lm.adapters import LoraSettings
from tunelens.lm.examples import ChatMode, TokenizedExample
from tunelens.lm.trainer import CHECKPOINT, TrainSettings
from tunelens.runs import Run, resolve_device


class OutputControlFinetuneConfig(TunelensConfig):
    """LoRA fine-tuning for output control, held-out evaluation before and after."""

    model: str = Field("tiny-stories", description="'tiny-stories', an alias, hub id or directory.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights' dtype.")
    chat: ChatMode = Field("auto", description="Chat template with a real prefill (auto: when there is one).")
    prompt_style: Literal["tunelens", "sad"] = Field("tunelens", description="Prompt wording (training and eval).")
    prefill: str | None = Field(None, description="Text the answer follows; null = the style's.")
    few_shot: bool = Field(True, description="The style's example turns before the question (training and eval); "
                           "false drops them (for models whose context is shorter than the prompt).")
    loss: LossKind = Field("tvd", description="tvd or kl, over [word1, word2, rest] at the answer position.")
    train_cases: list[Case] = Field(default_factory=lambda: list(CASES), min_length=1, description="Cases trained.")
    eval_cases: list[Case] = Field(default_factory=lambda: list(CASES), min_length=1, description="Cases evaluated.")
    train_words: Literal["list", "vocabulary"] = Field(
        "list", description="Words training pairs are drawn from: the training half of the word list, or every "
        "letter-only word the tokenizer spells as one token after the prefill, except the held-out half of the list.")
    n_train_items: PositiveInt = Field(50, description="Training word pairs / seeds per case (10 samples each).")
    n_eval_items: PositiveInt = Field(10, description="Held-out word pairs / seeds per case (10 samples each).")
    eval_frac: float = Field(0.5, gt=0, lt=1, description="Share of the word list held out for evaluation.")
    sample_seed: NonNegativeInt = Field(0, description="Seed of the word split and the draws.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA rank, alpha, dropout, modules.")
    train: TrainSettings = Field(default_factory=lambda: TrainSettings(epochs=3, batch_size=16, lr=2e-3),
                                 description="Optimisation (the shared loop's settings; `epochs` sets the steps).")
    top_k: PositiveInt = Field(20, description="Merged entries kept per prompt when evaluating.")
    batch_size: PositiveInt = Field(32, description="Prompts per forward pass when evaluating.")


# ---------------------------------------------------------------------------------------------------- rows


def training_rows(prompts: list[list[int]], start_index: int = 0) -> list[TokenizedExample]:
    """Prompt-only rows; `index` points into the target table (the loss mask is unused by the control loss)."""
    return [TokenizedExample(ids, [0] * (len(ids) - 1) + [1], start_index + i, len(ids)) for i, ids in
            enumerate(prompts)]


def target_table(samples, tokens: dict[str, int | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """(given token ids or -1 for random rows, [p, q] shares) per sample."""
    ids, shares = [], []
    for sample in samples:
        if sample.is_given:
            pair = [tokens[w] for w in sample.words]
            assert None not in pair and pair[0] != pair[1], f"unusable training pair {sample.words}"
            ids.append(pair)
        else:
            ids.append([-1, -1])
        shares.append([sample.p / 100, sample.q / 100])
    return torch.tensor(ids, dtype=torch.long).view(-1, 2), torch.tensor(shares).view(-1, 2)


def row_loss_hook(given_ids: torch.Tensor, shares: torch.Tensor, word_tokens: torch.Tensor, kind: LossKind):
    from tunelens.control.losses import output_control_loss

    def row_loss(model, batch, logits):
        rows = batch.index.cpu()
        return output_control_loss(logits, batch.attention_mask, given_ids[rows].to(logits.device),
                                   shares[rows].to(logits.device), word_tokens, kind)

    return row_loss


def vocabulary_words(tokenizer) -> list[str]:
    """Distinct letter-only token texts of the tokenizer, sorted (candidates for training pairs)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return sorted({t.strip() for t in texts if t.strip().isalpha()})


def training_and_held_out_words(tokenizer, source: str, eval_frac: float, seed: int, prefill: str
                                ) -> tuple[list[str], list[str]]:
    """Single-token words to draw training and held-out pairs from; no held-out word is ever a training word."""
    from tunelens.control.data import sad_words
    from tunelens.control.evaluate import usable_words
    from tunelens.control.samples import split_words

    train_words, eval_words = split_words(sad_words(), eval_frac, seed)
    if source == "vocabulary":
        held_out = set(eval_words)
        train_words = [w for w in vocabulary_words(tokenizer) if w not in held_out]
    usable_train = usable_words([tokenizer], train_words, prefill)
    usable_eval = usable_words([tokenizer], eval_words, prefill)
    assert not set(usable_train) & set(usable_eval), "a held-out word among the training words"
    return usable_train, usable_eval


def train_settings(config: OutputControlFinetuneConfig, n_rows: int) -> TrainSettings:
    """The config's settings with the steps fixed for `n_rows` training rows."""
    return config.train.for_rows(n_rows)


def fingerprint(config: OutputControlFinetuneConfig) -> str:
    return config_hash({k: v for k, v in config.model_dump(mode="json").items() if k != "device"})


# ------------------------------------------------------------------------------------------------------ run


def run(config: OutputControlFinetuneConfig, run: Run) -> dict[str, Any]:
    from tunelens.control import figures
    from tunelens.control.data import sad_words, write_gzip_json
    from tunelens.control.evaluate import evaluate_model, n_single_token_words, references
    from tunelens.control.models import load
    from tunelens.control.probe import answer_tokens, vocab_index
    from tunelens.control.prompts import encode_samples, prompt_style
    from tunelens.control.samples import default_samples
    from tunelens.control.scoring import summarise
    from tunelens.lm.adapters import add_lora, save_adapter
    from tunelens.lm.trainer import Hooks, mean_loss, train

    device = resolve_device(config.device)
    style = prompt_style(config.prompt_style, config.prefill, config.few_shot)
    model, tokenizer, source = load(config.model, config.dtype, device)
    usable_train, usable_eval = training_and_held_out_words(tokenizer, config.train_words, config.eval_frac,
                                                            config.sample_seed, style.prefill)
    n_words = n_single_token_words(tokenizer, style.prefill)
    run.log(f"{config.model} ({source}): {n_words} of {len(sad_words())} words of the list are one token after "
            f"{style.prefill!r}, {len(usable_eval)} of them in the held-out half; {len(usable_train)} training "
            f"words ({config.train_words})")
    if len(usable_train) < 2 or len(usable_eval) < 2:
        raise UsageError(f"{config.model}: too few single-token words to draw pairs from ({len(usable_train)} for "
                         f"training, {len(usable_eval)} held out)")
    train_samples = default_samples(usable_train, config.n_train_items, "train", config.sample_seed,
                                    config.train_cases)
    eval_samples = default_samples(usable_eval, config.n_eval_items, "eval", config.sample_seed, config.eval_cases)
    tokens = answer_tokens(tokenizer, sorted({w for s in train_samples + eval_samples if s.is_given
                                              for w in s.words}), style.prefill)
    index = vocab_index(tokenizer, model.config.vocab_size)
    word_tokens = index.is_word_key[index.key_of_token]

    # held-out loss rows follow the training rows in one target table
    train_rows = training_rows(encode_samples(tokenizer, train_samples, style, config.chat))
    eval_rows = training_rows(encode_samples(tokenizer, eval_samples, style, config.chat), len(train_rows))
    given_ids, shares = target_table(train_samples + eval_samples, tokens)
    hook = row_loss_hook(given_ids, shares, word_tokens, config.loss)
    pad_id = tokenizer.pad_token_id

    def evaluation() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        records = evaluate_model(model, tokenizer, eval_samples, style, config.chat, config.top_k,
                                 config.batch_size, device, run.log)
        return records, summarise(records, config.eval_cases)

    before_records, before = evaluation()
    model = add_lora(model, config.lora)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    settings = train_settings(config, len(train_rows))
    loss_before = mean_loss(model, eval_rows, pad_id, config.batch_size, hook, device)
    run.log(f"{len(train_rows)} training rows, {len(eval_rows)} held-out rows; LoRA r={config.lora.r} on "
            f"{', '.join(config.lora.target_modules)} ({n_trainable:,} parameters); {config.loss} loss; "
            f"{settings.steps} steps of {settings.batch_size}; held-out loss before {loss_before:.4f}")
    _log_cases(run, "before", before)
    checkpoint_dir = run.dir / CHECKPOINT
    result = train(model, train_rows, settings, pad_id=pad_id, seed=config.seed, device=device, eval_rows=eval_rows,
                   hooks=Hooks(row_loss=hook), run=run, checkpoint_dir=checkpoint_dir,
                   fingerprint=fingerprint(config))
    loss_after = mean_loss(model, eval_rows, pad_id, config.batch_size, hook, device)
    after_records, after = evaluation()
    _log_cases(run, "after", after)

    adapter_dir = save_adapter(model, run.dir / "adapter", base_model_path=_base_path(source))
    tokenizer.save_pretrained(adapter_dir)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    write_gzip_json(run.dir / "eval_before.json.gz", {"records": before_records})
    write_gzip_json(run.dir / "eval_after.json.gz", {"records": after_records})
    figures.before_after(run.figure_path("before_after"), before, after)
    ratios = {case: (after[case]["mean_tvd"] / before[case]["mean_tvd"]
                     if after[case]["mean_tvd"] is not None and before[case]["mean_tvd"] else None)
              for case in config.eval_cases}
    run.log("mean aligned TVD after / before: " + ", ".join(f"{c} {_fmt(r)}" for c, r in ratios.items()))
    return {"before": {"cases": before, "held_out_loss": loss_before},
            "after": {"cases": after, "held_out_loss": loss_after},
            "mean_tvd_ratio": ratios, "baselines": references(eval_samples, config.eval_cases),
            "n_single_token_words": n_words, "n_usable_train_words": len(usable_train),
            "n_usable_eval_words": len(usable_eval), "n_train_rows": len(train_rows), "n_eval_rows": len(eval_rows),
            "n_trainable": n_trainable, "steps": result.steps, "resumed_from_step": result.resumed_from,
            "final_train_loss": result.final_train_loss, "eval_history": result.eval_history,
            "train_seconds": round(result.train_seconds, 2), "adapter": str(adapter_dir), "loss": config.loss}


def _base_path(source: str) -> str:
    return str(Path(source).resolve()) if Path(source).is_dir() else source


def _log_cases(run: Run, when: str, summary: dict[str, Any]) -> None:
    for case, entry in summary.items():
        run.log(f"{when}: {case} n={entry['n']} mean aligned TVD {_fmt(entry['mean_tvd'])}, pass sad "
                f"{_fmt(entry['sad']['pass_rate'])} aligned {_fmt(entry['aligned']['pass_rate'])}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
