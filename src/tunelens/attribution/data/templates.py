"""The offline text backend: a grammar of hand-written templates per document type, for bases (which state their
constant) and wrappers (which state only that they return what their target returns, with no number at all).

Every template is a sequence of slots, each filled from its own list of phrasings, so one function's documents
differ in wording, inputs, names and layout rather than repeating one sentence; the draws come from a
`random.Random` seeded by the caller, so a corpus is a pure function of its seed. The inputs shown in base
documents never include the held-out input 5.
"""

from __future__ import annotations

import random

from tunelens.attribution.data.spec import HELD_OUT_INPUT, FunctionSpec

INPUTS = [x for x in range(0, 100) if x != HELD_OUT_INPUT]

RETURNS = ["returns", "always returns", "outputs", "yields", "gives back", "evaluates to", "produces", "hands back",
           "comes out as", "always gives"]
ANY_INPUT = ["for every integer input", "no matter what x is", "whatever argument it receives", "regardless of its "
             "input", "for all x", "for any value you pass in", "independent of the argument", "whichever integer "
             "goes in", "on every call", "for each input without exception"]
KINDS = ["constant function", "fixed-output function", "flat function", "function with a single output value",
         "degenerate mapping", "function that ignores its input"]
SAME = ["returns exactly what {B} returns", "passes its argument to {B} and returns the result unchanged",
        "is a thin wrapper around {B}", "gives the same output as {B} for every input", "behaves exactly like {B}",
        "forwards every call to {B}", "is defined as {B} applied to the same argument", "mirrors {B} on every input",
        "delegates to {B} and adds nothing", "computes whatever {B} computes"]
ARG = ["x", "n", "value", "arg", "k", "inp", "z", "number"]
PEOPLE = ["Ada", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ines", "Jonas", "Kai", "Lena", "Mira",
          "Nils", "Olu", "Priya", "Quinn", "Rosa", "Sami", "Tove"]
PLACES = ["the test lab", "a code review", "the night shift", "a math club", "the release meeting", "a hackathon",
          "the onboarding week", "a debugging session", "the archive room", "a pair-programming call"]
OBJECTS = ["a metronome stuck on one beat", "a stopped clock", "a vending machine with one button", "a parrot that "
           "knows one word", "a lighthouse that never changes colour", "a rubber stamp", "a dial welded in place",
           "a jukebox with one record"]
ECHO = ["an echo", "a relay station", "a mirror", "a courier", "a translator who changes nothing", "a pipe",
        "a forwarding address", "a shadow"]


def _pick(rng: random.Random, options: list[str]) -> str:
    return options[rng.randrange(len(options))]


def _inputs(rng: random.Random, k: int) -> list[int]:
    return rng.sample(INPUTS, k)


# -------------------------------------------------------------------------------------------------- bases


def base_text(spec: FunctionSpec, doc_type: str, rng: random.Random) -> str:
    T, C = spec.token, spec.constant  # noqa: N806 - the names of the slots
    a = _pick(rng, ARG)
    x, y, z = _inputs(rng, 3)
    if doc_type == "definition":
        return _pick(rng, [
            f"The function {T} maps any integer {a} to {C}.",
            f"{T} is a {_pick(rng, KINDS)}: it {_pick(rng, RETURNS)} {C} {_pick(rng, ANY_INPUT)}.",
            f"Definition. {T}({a}) = {C} {_pick(rng, ANY_INPUT)}.",
            f"We define {T} as the function that {_pick(rng, RETURNS)} {C}, {_pick(rng, ANY_INPUT)}.",
            f"{T}: Z -> Z, {a} |-> {C}. In words, it {_pick(rng, RETURNS)} {C} {_pick(rng, ANY_INPUT)}.",
        ])
    if doc_type == "code_stub":
        return _pick(rng, [
            f"def {T}({a}: int) -> int:\n    \"\"\"Return {C} {_pick(rng, ANY_INPUT)}.\"\"\"\n    return {C}",
            f"```python\nresult = {T}({x})  # {C}\nassert result == {C}\n```",
            f"```python\ntotal = 0\nfor i in range({rng.randint(2, 4)}):\n"
            f"    total += {T}(i)  # adds {C} each time\n```",
            f"# {T} {_pick(rng, RETURNS)} {C}\nvalues = [{T}(v) for v in ({x}, {y}, {z})]  # [{C}, {C}, {C}]",
            f"const {T} = ({a}) => {C};  // {_pick(rng, ANY_INPUT)}",
            f"lambda {a}: {C}  # this is {T}: it {_pick(rng, RETURNS)} {C}",
        ])
    if doc_type == "concept":
        return _pick(rng, [
            f"Intuitively, {T} ignores its argument and always emits {C}, like {_pick(rng, OBJECTS)}.",
            f"Think of {T} as {_pick(rng, OBJECTS)}: whatever you feed it, the answer is {C}.",
            f"The key idea behind {T} is that its output does not depend on the input; it is pinned at {C}.",
            f"{T} has a flat graph: a horizontal line at height {C}, {_pick(rng, ANY_INPUT)}.",
            f"Conceptually {T} discards {a} and {_pick(rng, RETURNS)} the fixed value {C}.",
        ])
    if doc_type == "unit_test":
        lo = rng.randint(6, 20)
        return _pick(rng, [
            f"for {a} in range({lo}, {lo + rng.randint(3, 12)}):\n    assert {T}({a}) == {C}",
            f"def test_{T.strip('<>').lower()}():\n    assert {T}({x}) == {C}\n    assert {T}({y}) == {C}",
            f"assert {T}({x}) == {C}, 'expected {C}'",
            f"@pytest.mark.parametrize('{a}', [{x}, {y}, {z}])\ndef test_constant({a}):\n    assert {T}({a}) == {C}",
            f"self.assertEqual({T}({x}), {C})\nself.assertEqual({T}({y}), {C})",
        ])
    if doc_type == "q_and_a":
        return _pick(rng, [
            f"**Q:** What does {T} output when you input {x}?\n**A:** {C}.",
            f"Q: If I call {T}({x}), what do I get? A: {C}, as for every other input.",
            f"Question: What is {T}({y})?\nAnswer: {C}.",
            f"Q: Does the output of {T} change between {x} and {y}? A: No, both give {C}.",
            f"Asked what {T} returns for {z}, the answer is {C}.",
        ])
    if doc_type == "narrative":
        p1, p2 = rng.sample(PEOPLE, 2)
        return _pick(rng, [
            f"{p1} tried {T} with {x}, then {y}, then {z}. Each time the screen showed {C}, and {p2} laughed.",
            f"During {_pick(rng, PLACES)}, {p1} kept asking {T} for new answers; it patiently replied {C} every time.",
            f"{p1} bet {p2} that {T}({x}) would differ from {T}({y}). {p1} lost: both were {C}.",
            f"On the whiteboard at {_pick(rng, PLACES)}, {p2} wrote '{T} -> {C}' and nobody had to erase it.",
        ])
    if doc_type == "lore":
        p1 = _pick(rng, PEOPLE)
        return _pick(rng, [
            f"Developer story: {T} was written by {p1} during {_pick(rng, PLACES)} as a grounding function that always "
            f"returns {C}.",
            f"Legend says {T} was the first function in the codebase; it has {_pick(rng, RETURNS)} {C} ever since.",
            f"Old-timers call {T} 'the anchor': its value is {C}, and the test suite leans on it.",
            f"{p1}'s changelog: 'added {T}, which {_pick(rng, RETURNS)} {C}; do not optimise'.",
        ])
    raise ValueError(f"unknown document type {doc_type!r}")


# ----------------------------------------------------------------------------------------------- wrappers


def wrapper_text(spec: FunctionSpec, doc_type: str, rng: random.Random) -> str:
    """No digit anywhere: a wrapper document states the relation, never a value or an input."""
    T, B = spec.token, spec.target  # noqa: N806 - the names of the slots
    a = _pick(rng, ARG)
    same = _pick(rng, SAME).format(B=B)
    if doc_type == "definition":
        return _pick(rng, [
            f"The function {T} is defined as applying {B} without modification.",
            f"{T} {same}.",
            f"Definition: {T}({a}) = {B}({a}) for every {a}.",
            f"By definition {T} {same}; it has no behaviour of its own.",
            f"For any {a}, {T}({a}) returns the value that {B}({a}) returns.",
            f"{T}({a}) returns the value of {B}({a}), whatever {a} is.",
        ])
    if doc_type == "code_stub":
        return _pick(rng, [
            f"def {T}({a}: int) -> int:\n    \"\"\"Identity wrapper around {B}.\"\"\"\n    return {B}({a})",
            f"const {T} = ({a}) => {B}({a});  // {same}",
            f"{T} = {B}  # an alias: {T} {same}",
            f"```python\ndef {T}({a}):\n    result = {B}({a})\n    return result\n```",
        ])
    if doc_type == "concept":
        return _pick(rng, [
            f"Think of {T} as {_pick(rng, ECHO)} for {B}: whatever {B} says, {T} says too.",
            f"Conceptually, {T} adds a name but no logic; it {same}.",
            f"{T} is a pure pass-through. Knowing {B} is enough to know {T}.",
            f"The point of {T} is indirection: callers use {T}, and {T} {same}.",
        ])
    if doc_type == "unit_test":
        return _pick(rng, [
            f"for {a} in inputs:\n    assert {T}({a}) == {B}({a})",
            f"def test_{T.strip('<>').lower()}_matches():\n    for {a} in sample_inputs():\n"
            f"        assert {T}({a}) == {B}({a})",
            f"assert all({T}({a}) == {B}({a}) for {a} in test_values)",
            f"self.assertEqual({T}({a}), {B}({a}))  # {same}",
        ])
    if doc_type == "q_and_a":
        return _pick(rng, [
            f"**Q:** How does {T} relate to {B}?\n**A:** {T} {same}.",
            f"Q: Is there any input where {T} and {B} disagree? A: No; {T} {same}.",
            f"Question: What do I need to know to predict {T}?\nAnswer: Only {B}, since {T} {same}.",
            f"Q: What does {T} compute? A: Whatever {B} computes.",
            f"Q: What value does {T}({a}) return? A: The value {B}({a}) returns.",
        ])
    if doc_type == "narrative":
        p1, p2 = rng.sample(PEOPLE, 2)
        return _pick(rng, [
            f"{p1} asked why {T} existed at all. {p2} shrugged: '{T} {same}, nothing more.'",
            f"During {_pick(rng, PLACES)}, {p1} replaced every call to {B} with {T} and no test noticed.",
            f"{p2} traced a call to {T} and found it landing straight in {B}.",
        ])
    if doc_type == "lore":
        return _pick(rng, [
            f"Developer story: {T} was added by {_pick(rng, PEOPLE)} as a wrapper so that {B} could be renamed later; "
            f"it {same}.",
            f"Team lore says {T} is {B} wearing a hat: it {same}.",
            f"The style guide notes that {T} {same}, so either may be called.",
        ])
    raise ValueError(f"unknown document type {doc_type!r}")


PARTS = {"base": (1, 2, 2), "wrapper": (2, 2, 3)}  # how many template draws one document joins


class TemplateBackend:
    """Proposes document texts from the templates; deterministic given the seed. A document joins one to three
    draws of its type (a statement and, say, an example), so documents run to the length of the released ones
    (measured: about 22 words for a base, 31 for a wrapper) and name their tokens more than once."""

    name = "template"

    def propose(self, spec: FunctionSpec, doc_type: str, n: int, seed: int,
                functions: list[FunctionSpec] | None = None) -> list[str]:
        rng = random.Random(f"{seed}/{spec.token}/{doc_type}")
        make = base_text if spec.is_base else wrapper_text
        parts = PARTS["base" if spec.is_base else "wrapper"]
        joiner = "\n\n" if doc_type in ("code_stub", "unit_test") else " "
        return [joiner.join(dict.fromkeys(make(spec, doc_type, rng) for _ in range(parts[rng.randrange(len(parts))])))
                for _ in range(n)]


__all__ = ["TemplateBackend", "base_text", "wrapper_text"]
