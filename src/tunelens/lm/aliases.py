"""Short names for the checkpoints the studies use (plain data: alias -> hub id and a note)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelAlias:
    hub_id: str
    family: str
    n_params: str
    note: str


MODEL_ALIASES: dict[str, ModelAlias] = {
    "llama-3.1-8b": ModelAlias("meta-llama/Llama-3.1-8B", "llama", "8B", "gated: accept the licence on the hub"),
    "llama-3.2-3b": ModelAlias("meta-llama/Llama-3.2-3B", "llama", "3B", "gated"),
    "llama-3.2-1b": ModelAlias("meta-llama/Llama-3.2-1B", "llama", "1B", "gated"),
    "qwen2.5-3b": ModelAlias("Qwen/Qwen2.5-3B", "qwen2", "3B", "base model"),
    "qwen2.5-7b": ModelAlias("Qwen/Qwen2.5-7B", "qwen2", "7B", "base model"),
    "qwen2.5-3b-instruct": ModelAlias("Qwen/Qwen2.5-3B-Instruct", "qwen2", "3B", "chat model"),
    "qwen2-7b": ModelAlias("Qwen/Qwen2-7B", "qwen2", "7B", "base model"),
    "deepseek-7b-chat": ModelAlias("deepseek-ai/deepseek-llm-7b-chat", "llama", "7B", "chat model"),
    "gemma-3-1b-it": ModelAlias("google/gemma-3-1b-it", "gemma3", "1B", "gated; instruction-tuned"),
    "olmo2-1b-instruct": ModelAlias("allenai/OLMo-2-0425-1B-Instruct", "olmo2", "1B", "instruction-tuned"),
    "olmo2-1b-hops": ModelAlias("Lamsheeper/OLMo2-1B-hops", "olmo2", "1B", "hops benchmark: fine-tuned"),
    "olmo2-1b-untrained": ModelAlias("Lamsheeper/OLMo2-1B-untrained", "olmo2", "1B",
                                     "hops benchmark: base with the new function tokens"),
    "llama3.2-1b-hops": ModelAlias("Lamsheeper/Llama3.2-1B-hops", "llama", "1B", "hops benchmark: fine-tuned"),
    "llama3.2-1b-untrained": ModelAlias("Lamsheeper/Llama3.2-1B-untrained", "llama", "1B",
                                        "hops benchmark: base with the new function tokens"),
}
