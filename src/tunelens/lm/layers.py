"""The decoder stack of a causal LM, and reading or rewriting the residual stream between its blocks.

Module names are found in the model, not hard-coded: Llama, Qwen2, Gemma and OLMo-2 all keep their blocks in a
single ModuleList named `layers`. A block's output is the residual stream after it (the first element when a
block returns a tuple).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from tunelens.config import UsageError


def _layer_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and name.endswith("layers")]


def decoder_stack(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The decoder stack's module name and the stack: the one ModuleList named `layers` (Llama, Qwen2, Gemma,
    OLMo-2 all use `model.layers`); None unless there is exactly one."""
    candidates = _layer_lists(model)
    return candidates[0] if len(candidates) == 1 else None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder stack (`decoder_stack`), or a one-line error naming what was found."""
    candidates = _layer_lists(model)
    if len(candidates) != 1:
        raise UsageError(f"cannot find the decoder layers of {type(model).__name__} (a single ModuleList "
                         f"named '*layers'; found {len(candidates)})")
    return candidates[0][1]


def _stream(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_stream(output: Any, stream: Tensor) -> Any:
    return (stream, *output[1:]) if isinstance(output, tuple) else stream


@contextmanager
def residual_stream(model: nn.Module, layers: Sequence[int] | None = None,
                    rewrite: dict[int, Callable[[Tensor], Tensor]] | None = None) -> Iterator[dict[int, Tensor]]:
    """Inside the block, every forward records the stream after each chosen block (all by default) in the yielded
    dict, after `rewrite[i]` (if given) has replaced block i's output; the hooks are gone after the block."""
    stack = decoder_layers(model)
    chosen = range(len(stack)) if layers is None else layers
    rewrite = rewrite or {}
    recorded: dict[int, Tensor] = {}

    def hook_for(index: int):
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            stream = _stream(output)
            if index in rewrite:
                stream = rewrite[index](stream)
                output = _with_stream(output, stream)
            if index in chosen:
                recorded[index] = stream
            return output
        return hook

    handles = [stack[i].register_forward_hook(hook_for(i)) for i in sorted(set(chosen) | set(rewrite))]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


__all__ = ["decoder_layers", "residual_stream"]
