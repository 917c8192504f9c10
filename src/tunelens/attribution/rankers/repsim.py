"""Representation similarity: cosine of pooled hidden states of one checkpoint (no difference, no gradient).

The baseline the checkpoint-difference methods must beat: it asks only whether a document "looks like" the query
to the trained model, not what training changed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from tunelens.attribution.rankers.activations import Pooling
from tunelens.attribution.rankers.base import AttributionData
from tunelens.attribution.rankers.checkpoint_diff import DiffOptions, _states, chosen_layers, compare
from tunelens.lm.layers import decoder_layers


class RepsimOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Literal["new", "old"] = Field("new", description="Whose hidden states.")
    pooling: Pooling = Field("mean", description="Positions pooled: mean over the predicting span, or the last.")
    layers: list[int] | None = Field([-1], description="Blocks compared (mean of the per-block cosines); null = all.")
    normalise: Literal["none", "zscore", "whiten"] = Field("none", description="Feature normalisation.")


def repsim_scores(data: AttributionData, options: RepsimOptions | None = None) -> Tensor:
    options = options or RepsimOptions()
    model = data.new if options.checkpoint == "new" else data.old
    layers = chosen_layers(len(decoder_layers(model)), options.layers)
    diff = DiffOptions(pooling=options.pooling, normalise=options.normalise)
    queries, _ = _states(data, options.checkpoint, "queries", options.pooling, diff.batch_size)
    documents, _ = _states(data, options.checkpoint, "documents", options.pooling, diff.batch_size)
    return compare(queries, documents, layers, diff)


__all__ = ["RepsimOptions", "repsim_scores"]
