"""The rankers: one module each, one interface (`base.AttributionData` in, a [query, document] score matrix out).

`METHODS` maps each method name (the key used everywhere: configs, summaries, ranked files) to its scoring function
and the section of `MethodOptions` it reads. Scoring modules are imported when their method runs, and kronfluence
and bergson themselves only inside their scoring functions, so a run that skips them never imports those libraries.
"""

from __future__ import annotations

import importlib

from pydantic import BaseModel, ConfigDict, Field

from tunelens.attribution.rankers.bergson_ranker import BergsonOptions
from tunelens.attribution.rankers.checkpoint_diff import DiffOptions
from tunelens.attribution.rankers.dlp import DlpOptions
from tunelens.attribution.rankers.kronfluence_ranker import KronfluenceOptions
from tunelens.attribution.rankers.repsim import RepsimOptions
from tunelens.config import UsageError

_R = "tunelens.attribution.rankers"
METHODS: dict[str, tuple[str, str | None]] = {
    "random": (f"{_R}.lexical:random_scores", None),
    "bm25": (f"{_R}.lexical:bm25_scores", None),
    "tfidf": (f"{_R}.lexical:tfidf_scores", None),
    "edit_distance": (f"{_R}.lexical:edit_distance_scores", None),
    "repsim": (f"{_R}.repsim:repsim_scores", "repsim"),
    "kronfluence": (f"{_R}.kronfluence_ranker:kronfluence_scores", "kronfluence"),
    "bergson": (f"{_R}.bergson_ranker:bergson_scores", "bergson"),
    "dh_similarity": (f"{_R}.checkpoint_diff:dh_similarity_scores", "dh_similarity"),
    "grad_similarity": (f"{_R}.checkpoint_diff:grad_similarity_scores", "grad_similarity"),
    "attr_change": (f"{_R}.checkpoint_diff:attr_change_scores", "attr_change"),
    "attr_change_ig": (f"{_R}.checkpoint_diff:attr_change_ig_scores", "attr_change_ig"),
    "causal_patching": (f"{_R}.checkpoint_diff:causal_patching_scores", "causal_patching"),
    "dlp": (f"{_R}.dlp:dlp_scores", "dlp"),
}


class MethodOptions(BaseModel):
    """Per-method options. The checkpoint-difference methods each have their own section (same fields), so one can
    match token by token on the last block while another pools every block; they share activations and gradients
    computed with the same pooling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dh_similarity: DiffOptions = Field(default_factory=lambda: DiffOptions(match="maxsim"),
                                       description="dh_similarity.")
    grad_similarity: DiffOptions = Field(default_factory=lambda: DiffOptions(match="maxsim", layers=[-1]),
                                         description="grad_similarity.")
    attr_change: DiffOptions = Field(default_factory=lambda: DiffOptions(match="maxsim"), description="attr_change.")
    attr_change_ig: DiffOptions = Field(default_factory=DiffOptions, description="attr_change_ig.")
    causal_patching: DiffOptions = Field(default_factory=DiffOptions, description="causal_patching.")
    repsim: RepsimOptions = Field(default_factory=RepsimOptions, description="repsim.")
    dlp: DlpOptions = Field(default_factory=DlpOptions, description="dlp.")
    kronfluence: KronfluenceOptions = Field(default_factory=KronfluenceOptions, description="kronfluence.")
    bergson: BergsonOptions = Field(default_factory=BergsonOptions, description="bergson.")


def scorer(method: str):
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r} (expected one of: {', '.join(METHODS)})")
    module_name, function = METHODS[method][0].split(":")
    return getattr(importlib.import_module(module_name), function)


def score_method(method: str, data, options: MethodOptions | None = None):
    """The [query, document] scores of one method (float32, on the CPU), shapes checked."""
    from tunelens.attribution.rankers.base import check_scores

    options = options or MethodOptions()
    function = scorer(method)
    section = METHODS[method][1]
    return check_scores(function(data, getattr(options, section) if section else None), data, method)


__all__ = ["METHODS", "MethodOptions", "score_method", "scorer"]
