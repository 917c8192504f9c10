"""A byte-level BPE tokenizer trained locally with `tokenizers`, saved as a standard PreTrainedTokenizerFast.

Like the Llama-3 and OLMo-2 tokenizers it prepends BOS when asked for special tokens (`tokenizer(text)`), so code
written for real checkpoints sees the same conventions on the tiny models.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: tuple[str, ...] = (BOS, EOS, PAD),
                        out_dir: str | Path | None = None, split_digits: bool = False,
                        added_tokens: tuple[str, ...] = ()):
    """Special tokens get the first ids, in the order given; BOS, EOS and PAD are named roles when present.

    `split_digits` cuts runs of digits from the letters and spaces around them before BPE (as the Llama-3 and
    OLMo-2 tokenizers do: " 12" is a space and then the number); `added_tokens` are ordinary (not special) tokens
    matched before BPE, e.g. the integers a benchmark needs as single tokens. `vocab_size` counts neither."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=False), byte_level])
                          if split_digits else byte_level)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    if BOS in special_tokens:
        core.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, core.token_to_id(BOS))])
    roles = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core,
                                        **{role: token for role, token in roles.items() if token in special_tokens})
    extra = [token for token in special_tokens if token not in roles.values()]
    if extra:
        tokenizer.add_special_tokens({"extra_special_tokens": extra})
    if added_tokens:
        tokenizer.add_tokens(list(added_tokens))
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
