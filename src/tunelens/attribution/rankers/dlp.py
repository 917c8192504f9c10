"""DLP-style probes (exploratory; after arXiv 2410.10811's deep linear probe generators): a learned, strongly
regularised low-dimensional view of what training changed, read out as a multi-hot "influencer" vector.

Features of a row are its checkpoint differences Δh (pooled, every chosen block concatenated, z-scored on the
documents). A deep linear generator (a product of linear maps, no non-linearity) turns k learned codes into k
probe directions; a row's k probe responses feed a linear classifier with one output per training document.
Training is self-supervised on the training documents alone: a document's target is itself (each document is its
own influencer), so with small k and weight decay the classifier can only separate documents through the few
directions of change that matter most, and documents that changed the model alike share their outputs. A query's
scores are the classifier's log-probabilities over the documents.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import Tensor

from tunelens.attribution.rankers.activations import Pooling
from tunelens.attribution.rankers.base import AttributionData
from tunelens.attribution.rankers.checkpoint_diff import DiffOptions, chosen_layers, delta, normalise_features
from tunelens.lm.layers import decoder_layers


class DlpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_probes: PositiveInt = Field(16, description="k: probe directions (the classifier sees k numbers per row).")
    generator_width: PositiveInt = Field(32, description="Width of the deep linear generator's hidden map.")
    generator_depth: PositiveInt = Field(2, description="Linear maps in the generator.")
    steps: PositiveInt = Field(300, description="Adam steps.")
    batch_size: PositiveInt = Field(512, description="Documents per step (each scored against all documents).")
    lr: PositiveFloat = Field(1e-2, description="Adam learning rate.")
    weight_decay: NonNegativeFloat = Field(1e-2, description="Decoupled weight decay on every parameter.")
    pooling: Pooling = Field("mean", description="Pooling of the differences (mean or last).")
    layers: list[int] | None = Field(None, description="Blocks whose differences are used; null = all.")


def dlp_probe_scores(document_features: Tensor, query_features: Tensor, options: DlpOptions, seed: int = 0
                     ) -> Tensor:
    """Train generator and classifier on the documents (mini-batches of rows, each against every document), return
    the queries' log-probabilities [query, doc]."""
    documents, queries = normalise_features(document_features, query_features, "zscore")
    n_docs, width = documents.shape
    generator = torch.Generator().manual_seed(seed)

    def param(*shape: int, scale: float) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.randn(*shape, generator=generator) * scale)

    codes = param(options.n_probes, options.generator_width, scale=1.0)
    maps = [param(options.generator_width, options.generator_width, scale=options.generator_width ** -0.5)
            for _ in range(options.generator_depth - 1)]
    out_map = param(options.generator_width, width, scale=width ** -0.5)
    classifier = param(options.n_probes, n_docs, scale=options.n_probes ** -0.5)
    bias = torch.nn.Parameter(torch.zeros(n_docs))
    params = [codes, *maps, out_map, classifier, bias]
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    targets = torch.arange(n_docs)

    def log_probs(features: Tensor) -> Tensor:
        probes = codes
        for layer in maps:
            probes = probes @ layer
        probes = probes @ out_map  # [k, width]: the generated probe directions
        responses = features @ probes.T / width ** 0.5
        return (responses @ classifier + bias).log_softmax(-1)

    for _ in range(options.steps):
        optimizer.zero_grad()
        rows = torch.randperm(n_docs, generator=generator)[:options.batch_size]
        loss = torch.nn.functional.nll_loss(log_probs(documents[rows]), targets[rows])
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return log_probs(queries)


def dlp_scores(data: AttributionData, options: DlpOptions | None = None) -> Tensor:
    options = options or DlpOptions()
    diff = DiffOptions(pooling=options.pooling)
    layers = chosen_layers(len(decoder_layers(data.new)), options.layers)
    documents = delta(data, "documents", diff)[:, layers].flatten(1)
    queries = delta(data, "queries", diff)[:, layers].flatten(1)
    return dlp_probe_scores(documents, queries, options, data.seed)


__all__ = ["DlpOptions", "dlp_probe_scores", "dlp_scores"]
