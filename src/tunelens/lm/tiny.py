"""Small models of real Hugging Face architectures, built from transformers' own config classes, so everything
trained on a laptop saves and loads like any checkpoint (`AutoModelForCausalLM.from_pretrained`) and code written
for Llama or OLMo-2 checkpoints (module names, hooks, adapters) runs on it unchanged."""

from __future__ import annotations

from typing import Literal

Architecture = Literal["llama", "olmo2"]


def tiny_causal_lm(architecture: Architecture = "llama", vocab_size: int = 2048, d_model: int = 128,
                   n_layers: int = 4, n_heads: int = 4, d_mlp: int | None = None, max_seq_len: int = 256,
                   tie_embeddings: bool = True, bos_token_id: int | None = None, eos_token_id: int | None = None,
                   pad_token_id: int | None = None):
    """A randomly initialised causal LM in fp32; d_mlp defaults to 4 * d_model."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Olmo2Config

    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    config_classes = {"llama": LlamaConfig, "olmo2": Olmo2Config}
    if architecture not in config_classes:
        raise ValueError(f"unknown architecture {architecture!r} (expected one of {', '.join(config_classes)})")
    config = config_classes[architecture](
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp or 4 * d_model,
        num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
        max_position_embeddings=max_seq_len, tie_word_embeddings=tie_embeddings, bos_token_id=bos_token_id,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    return AutoModelForCausalLM.from_config(config)
