"""Small models of real Hugging Face architectures, built from transformers' own config classes, so everything
trained on a laptop saves and loads like any checkpoint (`AutoModelForCausalLM.from_pretrained`)."""

from __future__ import annotations

from typing import Literal

Architecture = Literal["llama", "olmo2"]


def tiny_causal_lm(architecture: Architecture = "llama", vocab_size: int = 2048, d_model: int = 128,
                   n_layers: int = 4, n_heads: int = 4, d_mlp: int | None = None, max_seq_len: int = 256,
                   bos_token_id: int | None = None, eos_token_id: int | None = None, pad_token_id: int | None = None):
    from transformers import AutoModelForCausalLM, LlamaConfig, Olmo2Config

    common = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp or 4 * d_model,
                  num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
                  max_position_embeddings=max_seq_len, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                  pad_token_id=pad_token_id, tie_word_embeddings=True)
    if architecture == "llama":
        config = LlamaConfig(**common)
    elif architecture == "olmo2":
        config = Olmo2Config(**common)
    else:
        raise ValueError(f"unknown architecture {architecture!r} (llama or olmo2)")
    return AutoModelForCausalLM.from_config(config)
