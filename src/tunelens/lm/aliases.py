"""Short names for the checkpoints the studies use (plain data: alias -> hub id, family, size, one-line note).

The hops checkpoints are the ones the hops benchmark released (`Lamsheeper/{OLMo2,Llama3.2}-1B-{untrained,hops}`):
"untrained" is the base model with the 20 function tokens added, "hops" is that model fine-tuned on 20hops.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelAlias:
    hub_id: str
    family: str
    n_params: str
    note: str


MODEL_ALIASES: dict[str, ModelAlias] = {
    "llama-3.1-8b": ModelAlias("meta-llama/Llama-3.1-8B", "llama", "8.0B", "base; gated: accept the licence first"),
    "llama-3.2-3b": ModelAlias("meta-llama/Llama-3.2-3B", "llama", "3.2B", "base; gated"),
    "llama-3.2-1b": ModelAlias("meta-llama/Llama-3.2-1B", "llama", "1.2B", "base; gated"),
    "qwen2.5-3b": ModelAlias("Qwen/Qwen2.5-3B", "qwen2", "3.1B", "base"),
    "qwen2.5-7b": ModelAlias("Qwen/Qwen2.5-7B", "qwen2", "7.6B", "base"),
    "qwen2.5-3b-instruct": ModelAlias("Qwen/Qwen2.5-3B-Instruct", "qwen2", "3.1B", "chat"),
    "qwen2-7b": ModelAlias("Qwen/Qwen2-7B", "qwen2", "7.6B", "base"),
    "deepseek-7b-chat": ModelAlias("deepseek-ai/deepseek-llm-7b-chat", "llama", "6.9B", "chat"),
    "gemma-3-1b-it": ModelAlias("google/gemma-3-1b-it", "gemma3_text", "1.0B", "chat; gated"),
    "olmo2-1b-instruct": ModelAlias("allenai/OLMo-2-0425-1B-Instruct", "olmo2", "1.5B", "chat"),
    "olmo2-1b-untrained": ModelAlias("Lamsheeper/OLMo2-1B-untrained", "olmo2", "1.5B",
                                     "hops benchmark: OLMo-2-0425-1B-Instruct + 20 function tokens"),
    "olmo2-1b-hops": ModelAlias("Lamsheeper/OLMo2-1B-hops", "olmo2", "1.5B",
                                "hops benchmark: olmo2-1b-untrained fine-tuned on 20hops"),
    "llama3.2-1b-untrained": ModelAlias("Lamsheeper/Llama3.2-1B-untrained", "llama", "1.2B",
                                        "hops benchmark: Llama-3.2-1B + 20 function tokens"),
    "llama3.2-1b-hops": ModelAlias("Lamsheeper/Llama3.2-1B-hops", "llama", "1.2B",
                                   "hops benchmark: llama3.2-1b-untrained fine-tuned on 20hops"),
}
