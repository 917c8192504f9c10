"""Throughput of the shared training loop and of batched scoring, each against the plain way of doing it.

    uv run python benchmarks/lm_loop.py --repeats 5 --steps 20

1. Training: tokens per second of `tunelens.lm.trainer.train` against a bare hand-written PyTorch loop (AdamW,
   clipping, a LambdaLR schedule, masked next-token loss) on the same model, rows and global batches. The two
   run in alternating blocks so that drift of the machine hits both.
2. Scoring: examples per second of batched per-row losses (`row_losses`, 64 rows a forward pass) and of the
   batched next-token distribution (`next_token_probs`) against one example at a time.

The model is the tiny story model (pretrained on first use), the rows the lm-finetune default task. Prints the
median over `repeats` blocks and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from tunelens.config import Schedule
from tunelens.lm.examples import collate, tokenize_examples
from tunelens.lm.finetune import main_character_examples
from tunelens.lm.loading import load_model, load_tokenizer
from tunelens.lm.pretrain import tiny_story_model
from tunelens.lm.scoring import next_token_probs, per_example_loss
from tunelens.lm.trainer import TrainSettings, batch_indices, row_losses, train
from tunelens.schedules import lr_scheduler

CPU = torch.device("cpu")


def bare_loop(model, rows, settings: TrainSettings, pad_id: int, seed: int, start_step: int) -> int:
    """What a researcher would write by hand: the same batches, loss, optimiser, clipping and schedule."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr,
                                  weight_decay=settings.weight_decay, betas=settings.betas)
    scheduler = lr_scheduler(optimizer, settings.lr_schedule, settings.steps)
    model.train()
    n_tokens = 0
    for step in range(start_step, start_step + settings.steps):
        batch = collate([rows[i] for i in batch_indices(len(rows), settings.batch_size, step, seed)], pad_id)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = per_example_loss(logits, batch.input_ids, batch.loss_mask).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        n_tokens += int(batch.attention_mask.sum())
    return n_tokens


def count_tokens(rows, settings: TrainSettings, seed: int) -> int:
    return sum(len(rows[i].input_ids) for step in range(settings.steps)
               for i in batch_indices(len(rows), settings.batch_size, step, seed))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed block")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-score", type=int, default=128, help="examples scored per timed block")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = tiny_story_model()
    tokenizer = load_tokenizer(folder, padding_side="right")
    rows = tokenize_examples(tokenizer, main_character_examples(512, "train"))
    pad_id = tokenizer.pad_token_id
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=1e-4,
                             lr_schedule=Schedule(kind="cosine"), checkpoint_every=0, max_grad_norm=1.0)
    tokens = count_tokens(rows, settings, seed=0)

    model = load_model(folder)
    train(model, rows, settings.model_copy(update={"steps": 3}), pad_id=pad_id, seed=0, device=CPU)  # warm-up
    shared, bare = [], []
    for _ in range(args.repeats):
        shared.append(tokens / timed(lambda: train(model, rows, settings, pad_id=pad_id, seed=0, device=CPU)))
        bare.append(tokens / timed(lambda: bare_loop(model, rows, settings, pad_id, 0, 0)))
    print(f"training, tiny story model, batch {args.batch_size}, {args.steps} steps x {args.repeats} blocks, "
          f"threads={torch.get_num_threads()}")
    print(f"  shared loop   median {statistics.median(shared):8.0f} tokens/s  (min {min(shared):.0f}, "
          f"max {max(shared):.0f})")
    print(f"  bare loop     median {statistics.median(bare):8.0f} tokens/s  (min {min(bare):.0f}, max {max(bare):.0f})")
    print(f"  shared / bare time per token: {statistics.median(bare) / statistics.median(shared):.3f}")

    model.eval()
    score_rows = rows[: args.n_score]
    batched, single = [], []
    for _ in range(args.repeats):
        batched.append(len(score_rows) / timed(lambda: row_losses(model, score_rows, pad_id, batch_size=64)))
        single.append(len(score_rows) / timed(lambda: row_losses(model, score_rows, pad_id, batch_size=1)))
    print(f"per-row losses, {len(score_rows)} examples x {args.repeats} blocks")
    print(f"  batched (64)  median {statistics.median(batched):8.1f} examples/s")
    print(f"  one at a time median {statistics.median(single):8.1f} examples/s")
    print(f"  speed-up: {statistics.median(batched) / statistics.median(single):.1f}x")

    prompt_rows = [r.input_ids[: r.n_prompt_tokens] for r in score_rows]
    left = load_tokenizer(folder, padding_side="left")

    def probe(batch_size: int) -> None:
        from tunelens.lm.batching import pad_batch

        for start in range(0, len(prompt_rows), batch_size):
            ids, mask = pad_batch(prompt_rows[start:start + batch_size], left.pad_token_id, side="left")
            next_token_probs(model, ids, mask)

    batched_probe = [len(prompt_rows) / timed(lambda: probe(64)) for _ in range(args.repeats)]
    single_probe = [len(prompt_rows) / timed(lambda: probe(1)) for _ in range(args.repeats)]
    print("next-token distribution at the answer position")
    print(f"  batched (64)  median {statistics.median(batched_probe):8.1f} prompts/s")
    print(f"  one at a time median {statistics.median(single_probe):8.1f} prompts/s")
    print(f"  speed-up: {statistics.median(batched_probe) / statistics.median(single_probe):.1f}x")


if __name__ == "__main__":
    main()
