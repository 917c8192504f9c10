"""`tunelens run lm-finetune`: fine-tune a causal LM on prompt/completion examples, fully or with LoRA.

The default task is generated from the story corpus, so it runs offline: the first paragraph of a story, then
"Question: Who is the main character? Answer:", and the hero's name as the completion. The tiny story model has
read such stories but never such a question. Any JSONL of `prompt`/`completion` (or `text`) works through
`--set data=FILE`, and any causal LM through `--set model=...`.

The run directory gets the standard files plus `model/` (full fine-tuning: a transformers directory) or
`adapter/` (LoRA: a peft adapter directory naming its base), and `summary.json` with the held-out completion
loss before and after training.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from tunelens import distributed
from tunelens.config import TunelensConfig, UsageError, config_hash
from tunelens.lm.adapters import LoraSettings
from tunelens.lm.examples import ChatMode, Example, LossOn, read_examples, tokenize_examples
from tunelens.lm.loading import TINY_STORIES
from tunelens.lm.trainer import CHECKPOINT, DTYPES, TrainSettings, mean_loss, train
from tunelens.runs import Run, resolve_device

QUESTION = "\n\nQuestion: Who is the main character?\nAnswer:"


class FinetuneConfig(TunelensConfig):
    """Fine-tuning of a causal LM on prompt/completion examples."""

    model: str = Field(TINY_STORIES, description="'tiny-stories' (the local tiny base model), an alias, hub id "
                       "or directory.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights' dtype.")
    data: str | None = Field(None, description="Training JSONL (prompt/completion or text); null = the generated "
                             "main-character task.")
    eval_data: str | None = Field(None, description="Held-out JSONL; null = the task's test split, or the last "
                                  "eval_frac of `data`.")
    eval_frac: float = Field(0.1, gt=0, lt=1, description="Share of `data` held out when no eval_data is given.")
    n_train_examples: PositiveInt = Field(2000, description="Generated task: training stories.")
    n_eval_examples: PositiveInt = Field(200, description="Generated task: held-out stories.")
    corpus_seed: NonNegativeInt = Field(0, description="Generated task: seed of the story corpus.")
    loss_on: LossOn = Field("completion", description="Tokens in the loss: the completion only, or all.")
    chat: ChatMode = Field("auto", description="Render prompts with the tokenizer's chat template (auto: when it "
                           "has one).")
    max_len: PositiveInt = Field(256, description="Longest row in tokens (longer rows are cut at the end).")
    adapter: Literal["full", "lora"] = Field("full", description="Train every weight, or a LoRA adapter.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (adapter: lora).")
    train: TrainSettings = Field(default_factory=TrainSettings, description="Optimisation.")
    n_samples: NonNegativeInt = Field(4, description="Held-out prompts answered greedily for the summary.")

    @field_validator("data", "eval_data")
    @classmethod
    def _file_exists(cls, path: str | None) -> str | None:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"examples file not found: {path}")
        return path

    @model_validator(mode="after")
    def _eval_needs_data(self) -> FinetuneConfig:
        if self.eval_data is not None and self.data is None:
            raise ValueError("eval_data is given without data")
        return self


# --------------------------------------------------------------------------------------------------- data


def main_character_examples(n: int, split: str, seed: int = 0) -> list[Example]:
    """The generated task: a story's first paragraph, the question, and the hero's name."""
    from tunelens.lm.corpus import make_story, split_indices, story_hero

    examples = []
    for index, _ in zip(split_indices(split, seed), range(n)):
        first_paragraph = make_story(seed, index).split("\n\n")[0]
        examples.append(Example(first_paragraph + QUESTION, f" {story_hero(seed, index).name}.",
                                {"story_index": index}))
    return examples


def load_task(config: FinetuneConfig) -> tuple[list[Example], list[Example]]:
    if config.data is None:
        return (main_character_examples(config.n_train_examples, "train", config.corpus_seed),
                main_character_examples(config.n_eval_examples, "test", config.corpus_seed))
    examples = read_examples(config.data)
    if config.eval_data is not None:
        return examples, read_examples(config.eval_data)
    n_eval = max(1, round(config.eval_frac * len(examples)))
    if n_eval >= len(examples):
        raise UsageError(f"{config.data}: {len(examples)} example(s) is too few to hold out {n_eval}")
    return examples[:-n_eval], examples[-n_eval:]


# ---------------------------------------------------------------------------------------------------- run


def run(config: FinetuneConfig, run: Run) -> dict[str, Any]:
    device = distributed.setup(resolve_device(config.device))
    try:
        return finetune(config, run, device)
    finally:
        distributed.teardown()


def finetune(config: FinetuneConfig, run: Run, device: torch.device) -> dict[str, Any]:
    from tunelens.lm.loading import load_model, load_tokenizer, quiet_progress_bars, resolve_name

    quiet_progress_bars()  # saving prints bars too
    source = resolve_name(config.model)
    tokenizer = load_tokenizer(source, padding_side="right")
    model = load_model(source, dtype=DTYPES[config.dtype], device=device)
    train_examples, eval_examples = load_task(config)
    options = {"loss_on": config.loss_on, "max_len": config.max_len, "chat": config.chat}
    train_rows = tokenize_examples(tokenizer, train_examples, **options)
    eval_rows = tokenize_examples(tokenizer, eval_examples, **options)
    pad_id = tokenizer.pad_token_id
    if config.adapter == "lora":
        from tunelens.lm.adapters import add_lora

        model = add_lora(model, config.lora)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run.log(f"{config.model} ({source}) on {device}: {len(train_rows)} training and {len(eval_rows)} held-out "
            f"examples, {config.adapter} fine-tuning of {n_trainable:,} parameters, {config.train.steps} steps of "
            f"{config.train.batch_size} over {distributed.world_size()} process(es)")
    before = mean_loss(model, eval_rows, pad_id, config.train.eval_batch_size, device=device)
    accuracy_before = exact_match(greedy_answers(model, tokenizer, eval_examples, config), eval_examples)
    run.log(f"held-out completion loss before: {before:.4f}, exact answers {accuracy_before:.3f}")
    checkpoint_dir = run.dir / CHECKPOINT
    result = train(model, train_rows, config.train, pad_id=pad_id, seed=config.seed, device=device,
                   eval_rows=eval_rows, run=run, checkpoint_dir=checkpoint_dir, fingerprint=fingerprint(config))
    after = mean_loss(model, eval_rows, pad_id, config.train.eval_batch_size, device=device)
    answers = greedy_answers(model, tokenizer, eval_examples, config)
    accuracy_after = exact_match(answers, eval_examples)
    run.log(f"held-out completion loss after: {after:.4f} ({after / before:.3f} of before), exact answers "
            f"{accuracy_after:.3f}")
    samples = [{"prompt_end": e.prompt[-60:], "expected": e.completion, "answer": a}
               for e, a in zip(eval_examples[: config.n_samples], answers)]
    saved = None
    if distributed.is_writer():
        from tunelens.lm.figures import plot_training_curve

        saved = save_result(model, tokenizer, run.dir, config, source)
        run.log_metrics(config.train.steps - 1, {"eval/held_out_loss": after})
        plot_training_curve(run.dir / "metrics.jsonl", run.figure_path("loss"), before,
                            title=f"lm-finetune ({config.adapter}): held-out {before:.3f} -> {after:.3f}")
    distributed.barrier()
    if distributed.is_writer():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: the saved model replaces it
    return {"before": {"held_out_loss": before, "exact_match": accuracy_before},
            "after": {"held_out_loss": after, "exact_match": accuracy_after},
            "loss_ratio": after / before, "steps": result.steps, "resumed_from_step": result.resumed_from,
            "final_train_loss": result.final_train_loss, "eval_history": result.eval_history,
            "train_seconds": round(result.train_seconds, 2), "tokens_per_second": round(result.tokens_per_second, 1),
            "n_train_examples": len(train_rows), "n_eval_examples": len(eval_rows), "n_trainable": n_trainable,
            "processes": distributed.world_size(), "adapter": config.adapter, "saved": saved, "samples": samples}


def fingerprint(config: FinetuneConfig) -> str:
    """What a resumable checkpoint must match: everything but where the run happens."""
    return config_hash({k: v for k, v in config.model_dump(mode="json").items() if k != "device"})


def greedy_answers(model, tokenizer, examples: list[Example], config: FinetuneConfig, batch_size: int = 64
                   ) -> list[str]:
    """The model's greedy continuation of each prompt, stopped at the end of the line."""
    from tunelens.lm.examples import encode_prompt
    from tunelens.lm.generation import sample

    ids = [encode_prompt(tokenizer, e.prompt, config.chat) if e.prompt else tokenizer("")["input_ids"]
           for e in examples]
    return [answer for start in range(0, len(ids), batch_size)
            for answer in sample(model, tokenizer, prompt_ids=ids[start:start + batch_size], max_new_tokens=16,
                                 temperature=0, stop=["\n"])]


def exact_match(answers: list[str], examples: list[Example]) -> float:
    """Share of answers equal to the expected completion, surrounding whitespace ignored."""
    return sum(a.strip() == e.completion.strip() for a, e in zip(answers, examples)) / max(len(examples), 1)


def save_result(model, tokenizer, run_dir: Path, config: FinetuneConfig, source: str) -> str:
    """`model/` for full fine-tuning, `adapter/` for LoRA; both load with plain transformers / peft."""
    if config.adapter == "lora":
        from tunelens.lm.adapters import save_adapter

        out = save_adapter(model, run_dir / "adapter", base_model_path=Path(source).resolve()
                           if Path(source).is_dir() else source)
    else:
        out = run_dir / "model"
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def finetuned_model(config: FinetuneConfig) -> Path:
    """The fine-tuned checkpoint of this config (`model/` or `adapter/`), trained on first use and cached."""
    from tunelens.cache import cached
    from tunelens.registry import get_experiment
    from tunelens.runs import run_experiment

    def build(folder: Path) -> None:
        run_experiment(get_experiment("lm-finetune"), config, folder, quiet=True)

    folder = cached("lm-finetune", {"fingerprint": fingerprint(config)}, build)
    return folder / ("adapter" if config.adapter == "lora" else "model")
