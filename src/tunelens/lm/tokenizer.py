"""A byte-level BPE tokenizer trained locally with `tokenizers`, saved as a standard PreTrainedTokenizerFast."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: tuple[str, ...] = (BOS, EOS, PAD),
                        out_dir: str | Path | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    named = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core,
                                        **{k: v for k, v in named.items() if v in special_tokens})
    extra = [t for t in special_tokens if t not in named.values()]
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": extra})
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
