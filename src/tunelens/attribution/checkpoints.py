"""The models of the hops benchmark: the "untrained" checkpoint (a base model that knows the function tokens) and
loading a checkpoint pair for attribution.

Two kinds of base:
- `tiny` (the default): the profile measured in the research notes, built here from nothing: a byte-level BPE
  tokenizer trained on the corpus (digits split from letters and spaces, the integers 0-100 as single tokens, the
  function tokens special), and a randomly initialised 1.6M-parameter Llama. Its "untrained" checkpoint is that
  initialisation.
- any causal LM by alias, hub id or directory (`tiny-stories`, `olmo2-1b-instruct`, ...): the function tokens are
  added as special tokens with embedding rows drawn at the median norm of the trained rows
  (`tunelens.lm.embeddings`), as the original prepared its checkpoints; `add_number_tokens` adds 0-100 too, for
  tokenizers that split numbers (the tiny story model's).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tunelens.config import UsageError
from tunelens.lm.tokenizer import BOS, EOS, PAD

TINY = "tiny"
NUMBER_TOKENS = tuple(str(i) for i in range(101))


def tiny_profile(texts: list[str], tokens: list[str], seed: int, vocab_size: int = 2048, d_model: int = 128,
                 n_layers: int = 4, n_heads: int = 4, d_mlp: int = 512, max_seq_len: int = 256):
    """(model, tokenizer) of the tiny profile, the model at its seeded random initialisation."""
    from tunelens.lm.tiny import tiny_causal_lm
    from tunelens.lm.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(texts, vocab_size, (BOS, EOS, PAD, *tokens), split_digits=True,
                                    added_tokens=NUMBER_TOKENS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = tiny_causal_lm("llama", len(tokenizer), d_model, n_layers, n_heads, d_mlp, max_seq_len,
                               tie_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer


def with_function_tokens(name: str, tokens: list[str], seed: int, add_number_tokens: bool = False,
                         dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """(model, tokenizer): a pretrained model by alias, hub id or directory, with the function tokens added."""
    from tunelens.lm.embeddings import add_special_tokens
    from tunelens.lm.loading import load_model, load_tokenizer, resolve_name

    resolved = resolve_name(name)
    model = load_model(resolved, dtype=dtype, device=device)
    tokenizer = load_tokenizer(resolved, "right")
    generator = torch.Generator().manual_seed(seed)
    if add_number_tokens:
        tokenizer.add_tokens([n for n in NUMBER_TOKENS if n not in tokenizer.get_vocab()])
    add_special_tokens(model, tokenizer, tokens, generator)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return model, tokenizer


def load_checkpoint(name_or_path: str | Path, tokens: list[str], device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of one side of a pair; a checkpoint whose tokenizer lacks a function token is an error
    (it was not prepared for the benchmark)."""
    from tunelens.lm.loading import load_model, load_tokenizer, resolve_name

    resolved = resolve_name(str(name_or_path))
    tokenizer = load_tokenizer(resolved, "right")
    check_function_tokens(tokenizer, tokens, str(name_or_path))
    model = load_model(resolved, dtype=dtype, device=device)
    return model, tokenizer


def check_function_tokens(tokenizer, tokens: list[str], where: str) -> None:
    vocab = tokenizer.get_vocab()
    missing = [token for token in tokens if token not in vocab]
    if missing:
        raise UsageError(f"{where}: the tokenizer lacks the function tokens {' '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''} (prepare it with `tunelens run hops-train`)")


def check_same_tokens(tokenizer_a, tokenizer_b, texts: list[str], where: tuple[str, str]) -> None:
    """Both sides of a pair must turn the same text into the same ids, or their activations do not compare."""
    if tokenizer_a.get_vocab() != tokenizer_b.get_vocab():
        raise UsageError(f"the tokenizers of {where[0]} and {where[1]} differ: a checkpoint pair must share one")
    for text in texts:
        if tokenizer_a(text)["input_ids"] != tokenizer_b(text)["input_ids"]:
            raise UsageError(f"the tokenizers of {where[0]} and {where[1]} split {text[:40]!r} differently")


__all__ = ["NUMBER_TOKENS", "TINY", "check_function_tokens", "check_same_tokens", "load_checkpoint", "tiny_profile",
           "with_function_tokens"]
