"""What a generated corpus is made of: functions (a base returns a constant; a wrapper returns what its target
returns, its target being a base or, for hop depth 2, another wrapper) and the document types of the original."""

from __future__ import annotations

from dataclasses import dataclass

DOC_TYPES = ("definition", "code_stub", "concept", "unit_test", "q_and_a", "narrative", "lore")
HELD_OUT_INPUT = 5  # the original meant f(5) to stay out of every document

# the released corpus's tokens: base i and the wrapper that calls it
RELEASED_BASES = ("<GN>", "<JN>", "<KN>", "<LN>", "<MN>", "<NN>", "<ON>", "<PN>", "<QN>", "<RN>")
RELEASED_WRAPPERS = ("<FN>", "<IN>", "<HN>", "<SN>", "<TN>", "<UN>", "<VN>", "<WN>", "<XN>", "<YN>")


@dataclass(frozen=True)
class FunctionSpec:
    token: str
    depth: int  # 0 = base, 1 = wraps a base, 2 = wraps a depth-1 wrapper
    constant: int  # what it returns (for a wrapper: what its chain's base returns; never in its texts)
    target: str | None = None  # the function it calls (None for a base)

    @property
    def role(self) -> str:
        return "constant" if self.depth == 0 else "identity"

    @property
    def is_base(self) -> bool:
        return self.depth == 0


__all__ = ["DOC_TYPES", "FunctionSpec", "HELD_OUT_INPUT", "RELEASED_BASES", "RELEASED_WRAPPERS"]
