"""Influence functions through kronfluence (EK-FAC, K-FAC, diagonal or identity preconditioning).

The score of document d for query q is kronfluence's pairwise influence

    score(q, d) = grad_theta m_q^T (G + damping)^-1 grad_theta L_d

where m_q is the query's measurement (its answer-token loss, `CompletionLossTask.row_measurement`), L_d the
document's training loss (`CompletionLossTask.row_train_loss`, every token in the loss), and G the (EK-FAC, K-FAC,
diagonal or identity) approximation of the Gauss-Newton Hessian fitted on the documents. Both gradients are taken
only through the tracked Linear modules: by default the Linear layers inside the decoder blocks, the lm_head left
out (with it tracked, its vocab x vocab gradient covariance dominates the cost on a CPU).

kronfluence runs on a deep copy of the fine-tuned model (`prepare_model` wraps modules in place), so `data.new` is
untouched for the other rankers. Its files (factors, scores) go under `work_dir/kronfluence`, or a temporary
directory removed afterwards.

Cost, measured on the 1.6M-parameter hops model (3000 documents of ~42 tokens, 100 queries, EK-FAC, blocks only)
on a 2-core CPU shared with one other busy process: factors 68 s + scores 42 s with one torch thread, 161 s + 262 s
with two (thread contention); the eigendecomposition always runs on one thread (see `single_threaded`).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.utils.data import Dataset

from tunelens.attribution.rankers.base import AttributionData
from tunelens.config import UsageError
from tunelens.lm.examples import Batch, TokenizedExample, collate, length_order
from tunelens.lm.layers import decoder_layers
from tunelens.lm.task import CompletionLossTask


class KronfluenceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["ekfac", "kfac", "diagonal", "identity"] = Field(
        "ekfac", description="Hessian approximation: EK-FAC, K-FAC, diagonal (of the per-parameter Fisher), or "
                             "identity (plain gradient inner products, no fitting)")
    modules: Literal["blocks", "all"] = Field(
        "blocks", description="Linear modules whose parameters the gradients are taken over: 'blocks' = every "
                              "Linear inside the decoder layers, 'all' = every Linear, the lm_head included")
    damping: float | None = Field(
        None, description="Damping added to the approximate Hessian's eigenvalues; None = kronfluence's heuristic "
                          "(0.1 x the mean eigenvalue, per module). Unused by the identity strategy")
    train_batch_size: int = Field(32, ge=1, description="Documents per batch, for factor fitting and scoring")
    query_batch_size: int = Field(50, ge=1, description="Queries per batch when computing query gradients")
    use_empirical_fisher: bool = Field(
        False, description="Fit the factors on the documents' own tokens (empirical Fisher) instead of labels "
                           "drawn from the model (true Fisher)")


# ------------------------------------------------------------------------------------------------ datasets


class RowDataset(Dataset):
    """Rows padded to one length (the longest row) so kronfluence's default collate can stack them; each item
    is a dict of input_ids, attention_mask, loss_mask (both 0 on padding) and index."""

    def __init__(self, rows: Sequence[TokenizedExample], pad_id: int):
        self.batch = collate(rows, pad_id)

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        b = self.batch
        return {"input_ids": b.input_ids[i], "attention_mask": b.attention_mask[i], "loss_mask": b.loss_mask[i],
                "index": b.index[i]}


def to_batch(items: dict[str, Tensor]) -> Batch:
    """A stacked dict back into a `Batch`, cut after the batch's last real token (rows are right-padded, so the
    columns dropped are padding in every row)."""
    width = max(int(items["attention_mask"].sum(-1).max()), 1)
    return Batch(items["input_ids"][:, :width], items["attention_mask"][:, :width], items["loss_mask"][:, :width],
                 items["index"])


# ---------------------------------------------------------------------------------------------------- task


def tracked_module_names(model: nn.Module, modules: Literal["blocks", "all"]) -> list[str]:
    """Names of the Linear modules kronfluence tracks: those inside the decoder layers, or all of them."""
    if modules == "all":
        names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    else:
        stack = decoder_layers(model)
        prefix = next(name for name, m in model.named_modules() if m is stack) + "."
        names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.startswith(prefix)]
    if not names:
        raise UsageError(f"kronfluence: no Linear module to track in {type(model).__name__} (modules={modules})")
    return names


def make_task(loss: CompletionLossTask, tracked: list[str]):
    """A kronfluence Task that delegates to the project's loss contract (batch values are sums over rows)."""
    from kronfluence.task import Task

    class CompletionTask(Task):
        def compute_train_loss(self, batch: Any, model: nn.Module, sample: bool = False) -> Tensor:
            return loss.row_train_loss(model, to_batch(batch), sample).sum()

        def compute_measurement(self, batch: Any, model: nn.Module) -> Tensor:
            return loss.row_measurement(model, to_batch(batch)).sum()

        def get_influence_tracked_modules(self) -> list[str]:
            return tracked

        def get_attention_mask(self, batch: Any) -> Tensor:
            return to_batch(batch).attention_mask

    return CompletionTask()


@contextmanager
def quiet_kronfluence() -> Iterator[None]:
    """kronfluence logs every step at INFO (at the root logger's level) and warns that its GradScaler call is
    deprecated on every pass; keep its logging to warnings and drop those FutureWarnings meanwhile."""
    logger = logging.getLogger("kronfluence")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="kronfluence")
            yield
    finally:
        logger.setLevel(level)


@contextmanager
def single_threaded(enabled: bool) -> Iterator[None]:
    """One torch thread meanwhile. The per-module eigendecompositions are small (a few hundred rows on the models
    run on a CPU), gain little from threads, and multi-threaded LAPACK eigh thrashes when the cores are shared:
    measured on a 2-core machine with one other busy process, eigh of a 512 x 512 fp64 matrix took 5.3 s with 2
    threads and 0.02 s with 1."""
    threads = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def output_dir(work_dir: Path | None) -> Iterator[Path]:
    if work_dir is not None:
        path = Path(work_dir) / "kronfluence"
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="kronfluence-") as tmp:
            yield Path(tmp)


# --------------------------------------------------------------------------------------------------- ranker


def kronfluence_scores(data: AttributionData, options: KronfluenceOptions | None = None) -> Tensor:
    """[query, document] kronfluence pairwise influence, higher = more helpful.

    Sign: kronfluence returns grad m_q^T (G + damping)^-1 grad L_d, with no minus sign. Upweighting document d by
    eps moves the parameters by -eps (G + damping)^-1 grad L_d (the influence-function response of the training
    optimum), which changes the query's measurement by -eps x score. The measurement is the query's answer loss, so
    a positive score means training more on d lowers that loss, i.e. makes the model's answer more likely. The
    scores are therefore returned as kronfluence gives them: higher = the document helped.
    """
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments

    options = options or KronfluenceOptions()
    documents, queries = data.document_rows(), data.query_rows()
    doc_order, query_order = length_order(documents), length_order(queries)
    train_set = RowDataset([documents[i] for i in doc_order], data.pad_id)
    query_set = RowDataset([queries[i] for i in query_order], data.pad_id)

    model = copy.deepcopy(data.new)  # prepare_model wraps the tracked modules in place
    tracked = tracked_module_names(model, options.modules)
    loss = CompletionLossTask(torch.Generator().manual_seed(data.seed))
    task = make_task(loss, tracked)
    model = prepare_model(model, task)

    # fp32 throughout (kronfluence's defaults; eigendecompositions in fp64), no mixed precision
    factor_args = FactorArguments(strategy=options.strategy, use_empirical_fisher=options.use_empirical_fisher)
    score_args = ScoreArguments(damping_factor=options.damping)
    factors_name = f"{options.strategy}-{options.modules}-{'empirical' if options.use_empirical_fisher else 'true'}"
    cpu = torch.device(data.device).type == "cpu"

    with quiet_kronfluence(), output_dir(data.work_dir) as out:
        analyzer = Analyzer(analysis_name="tunelens", model=model, task=task, cpu=cpu, disable_tqdm=True,
                            output_dir=str(out))
        start = time.perf_counter()
        # fit_all_factors, step by step: covariances, eigendecomposition, eigenvalue correction (lambda)
        fit = {"factors_name": factors_name, "factor_args": factor_args, "overwrite_output_dir": True}
        analyzer.fit_covariance_matrices(dataset=train_set, per_device_batch_size=options.train_batch_size, **fit)
        with single_threaded(cpu):
            analyzer.perform_eigendecomposition(**fit)
        analyzer.fit_lambda_matrices(dataset=train_set, per_device_batch_size=options.train_batch_size, **fit)
        fitted = time.perf_counter()
        data.log(f"kronfluence {options.strategy} ({len(tracked)} modules): factors on {len(documents)} documents "
                 f"in {fitted - start:.1f} s")
        analyzer.compute_pairwise_scores(f"{factors_name}-pairwise", factors_name, query_set, train_set,
                                         per_device_query_batch_size=options.query_batch_size,
                                         per_device_train_batch_size=options.train_batch_size,
                                         score_args=score_args, overwrite_output_dir=True)
        sorted_scores = analyzer.load_pairwise_scores(f"{factors_name}-pairwise")["all_modules"]
        data.log(f"kronfluence {options.strategy}: {len(queries)} x {len(documents)} scores in "
                 f"{time.perf_counter() - fitted:.1f} s")

    scores = torch.empty(len(queries), len(documents), dtype=torch.float32)
    scores[torch.tensor(query_order)[:, None], torch.tensor(doc_order)[None, :]] = sorted_scores.float().cpu()
    return scores


__all__ = ["KronfluenceOptions", "RowDataset", "kronfluence_scores", "make_task", "to_batch",
           "tracked_module_names"]
