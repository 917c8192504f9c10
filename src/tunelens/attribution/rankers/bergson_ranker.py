"""Bergson (EleutherAI) gradient-similarity attribution: randomly projected per-example loss gradients.

The documents' gradients are collected with bergson's own machinery (`collect_gradients` with a
`GradientProcessor` doing its per-module double-sided random projection) into an on-disk index; each query's
gradient is collected with the same processor through `Attributor.trace`, and `Attributor.search` scores it
against every indexed document (k = all documents, optionally as cosines with `unit_norm`).

Both sides follow the project's loss contract (`tunelens.lm.task`), not bergson's text pipeline:

    document gradient = d/dθ of the document's training loss: mean next-token loss over every token of its row
                        (labels -100 outside the loss mask, `loss_reduction="mean"`)
    query gradient    = d/dθ of the query's measurement: the loss of the answer token given the prompt
                        (`CompletionLossTask.measurement` on the query rows, whose loss mask is the answer only)

The rows are the project's own (`AttributionData.document_rows()` / `query_rows()`), so the tokenisation is exactly
the one training and the other rankers use. Gradients are of the fine-tuned checkpoint (`data.new`), taken on a
deep copy whose input embeddings require grad (what bergson's own loader does so its hooks see a backward pass);
only the Linear modules inside the base model are tracked (bergson's default: `lm_head` and embeddings excluded),
or those `modules` names.

Importing bergson takes ~15 s (it pulls bitsandbytes), so it is imported inside the functions only.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from tunelens.attribution.rankers.base import AttributionData
from tunelens.lm.examples import TokenizedExample, collate
from tunelens.lm.task import CompletionLossTask


class BergsonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    projection_dim: int = Field(16, ge=0, description=(
        "Side of bergson's per-module random projection: each tracked module's gradient [out, in] becomes "
        "L G R^T of shape [p, p] (Rademacher, JL scaling). 0 = no projection: the index holds exact gradients."))
    unit_norm: bool = Field(False, description=(
        "True: cosine of the query and document gradients (both unit-normalised over all tracked modules); "
        "False: their raw inner product."))
    token_batch_size: int = Field(2048, gt=0, description=(
        "bergson's batching budget for the index: documents per batch x longest document in the batch <= this "
        "many tokens (its `IndexConfig.token_batch_size`)."))
    modules: tuple[str, ...] | None = Field(None, description=(
        "Glob patterns over module names inside the model's base model (e.g. 'layers.*.mlp.*'); the Linear "
        "modules matching any are tracked. None = every Linear module of the base model, bergson's default "
        "(the transformer blocks; lm_head and embeddings are not tracked)."))


def gradient_model(data: AttributionData) -> nn.Module:
    """A copy of the fine-tuned checkpoint in eval mode whose input embeddings require grad (as bergson's loader
    sets it), so a backward pass reaches the hooked modules; the tracked weights themselves need no grad."""
    def build() -> nn.Module:
        model = copy.deepcopy(data.new).eval()
        model.requires_grad_(False)
        model.get_input_embeddings().requires_grad_(True)
        return model

    return data.memo("bergson/model", build)


def tracked_modules(model: nn.Module, patterns: tuple[str, ...] | None) -> set[str]:
    """Names (relative to `model.base_model`, as bergson's hooks name them) of the Linear modules tracked."""
    from bergson.gradients import LayerAdapter

    names = [name for name, module in model.base_model.named_modules()
             if isinstance(module, LayerAdapter.supported_modules)]
    chosen = {name for name in names if patterns is None or any(fnmatchcase(name, p) for p in patterns)}
    if not chosen:
        raise ValueError(f"bergson: no Linear module of the base model matches {patterns} "
                         f"(modules: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})")
    return chosen


def labelled_dataset(rows: list[TokenizedExample]):
    """A `datasets.Dataset` bergson's collector reads: input_ids, labels (the token where it is in the loss,
    -100 elsewhere; bergson scores label t as the prediction from position t-1, as `per_example_loss` does) and
    length (for its batch allocation)."""
    from datasets import Dataset

    return Dataset.from_dict({
        "input_ids": [row.input_ids for row in rows],
        "labels": [[t if m else -100 for t, m in zip(row.input_ids, row.loss_mask)] for row in rows],
        "length": [len(row.input_ids) for row in rows],
    })


def build_index(model: nn.Module, rows: list[TokenizedExample], modules: set[str], run_path: Path,
                options: BergsonOptions, seed: int) -> Path:
    """Collect every row's projected training-loss gradient into a bergson index at `run_path` (replaced if it
    exists): gradients.bin + info.json, data.hf (with each row's loss) and the processor's config."""
    from bergson import GradientProcessor, IndexConfig, collect_gradients
    from bergson.data import allocate_batches

    cfg = IndexConfig(str(run_path), projection_dim=options.projection_dim, projection_seed=seed,
                      token_batch_size=options.token_batch_size, loss_reduction="mean", loss_fn="ce")
    processor = GradientProcessor(projection_dim=options.projection_dim or None, projection_type=cfg.projection_type,
                                  projection_scale=cfg.projection_scale, projection_seed=seed)
    for path in (run_path, cfg.partial_run_path):
        shutil.rmtree(path, ignore_errors=True)
    cfg.partial_run_path.mkdir(parents=True)
    dataset = labelled_dataset(rows)
    batches = allocate_batches(dataset["length"][:], options.token_batch_size)
    collect_gradients(model, dataset, processor, cfg, batches=batches, target_modules=modules)
    shutil.move(cfg.partial_run_path, run_path)  # as `bergson.build.build` finishes an index
    return run_path


@contextmanager
def quiet_bergson() -> Iterator[None]:
    """Inside the block bergson runs without its chatter: importing it configures the root logger (a handler and
    format for the whole process) and makes bitsandbytes warn about an optional CPU kernel; it logs every tracked
    module's name at INFO and draws a tqdm bar per index. Here the import leaves the process's logging as it was,
    messages below WARNING are dropped, and off a terminal the bars are off (datasets' too)."""
    import functools
    import logging

    from tunelens.runs import is_interactive

    root = logging.getLogger()
    handlers, level, disabled = list(root.handlers), root.level, logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import bergson.collector.collector as collector
    finally:
        logging.disable(disabled)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    bars_off = not is_interactive()
    original_tqdm = collector.tqdm
    logging.disable(logging.INFO)
    if bars_off:
        from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

        datasets_bars = is_progress_bar_enabled()
        disable_progress_bar()
        collector.tqdm = functools.partial(original_tqdm, disable=True)
    try:
        with warnings.catch_warnings():  # its index is memory-mapped read-only, and only read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            yield
    finally:
        logging.disable(disabled)
        collector.tqdm = original_tqdm
        if bars_off and datasets_bars:
            enable_progress_bar()


def index_dir(data: AttributionData) -> Path:
    if data.work_dir is not None:
        return Path(data.work_dir) / "bergson"
    from tempfile import TemporaryDirectory

    return Path(data.memo("bergson/tmp", lambda: TemporaryDirectory(prefix="bergson-")).name)


def bergson_scores(data: AttributionData, options: BergsonOptions | None = None) -> Tensor:
    with quiet_bergson():
        return _bergson_scores(data, options)


def _bergson_scores(data: AttributionData, options: BergsonOptions | None = None) -> Tensor:
    """Float [query, document] scores: bergson's inner product (cosine with `unit_norm`) of the query's
    answer-loss gradient with each document's training-loss gradient, after the random projection.

    Sign: both are gradients of losses, so a positive score means a gradient step on the document (θ -= η g_doc)
    lowers the query's loss to first order (Δ loss_query ≈ -η g_query · g_doc): higher = the document pushes the
    model towards the query's answer. The index is built once per AttributionData and options other than
    `unit_norm` (both settings share it)."""
    from bergson import Attributor

    options = options or BergsonOptions()
    model = gradient_model(data)
    modules = tracked_modules(model, options.modules)
    n_docs = len(data.documents)

    key = (options.projection_dim, data.seed, options.token_batch_size, tuple(sorted(modules)))
    run_name = f"index-p{options.projection_dim}-seed{data.seed}-{hashlib.sha1(repr(key).encode()).hexdigest()[:8]}"

    def build() -> Path:
        start = time.perf_counter()
        path = build_index(model, data.document_rows(), modules, index_dir(data) / run_name, options, data.seed)
        data.log(f"bergson: index of {n_docs} document gradients ({len(modules)} modules, projection "
                 f"{options.projection_dim or 'none'}) built in {time.perf_counter() - start:.1f}s at {path}")
        return path

    run_path = data.memo(f"bergson/index/{key}", build)

    start = time.perf_counter()
    attributor = Attributor(run_path, device=str(data.device), unit_norm=options.unit_norm)
    rows = data.query_rows()
    scores = torch.zeros(len(rows), n_docs)
    task = CompletionLossTask()
    for lo in range(0, len(rows), data.batch_size):
        batch = collate(rows[lo:lo + data.batch_size], data.pad_id).to(data.device)
        with attributor.trace(model.base_model, n_docs, modules=modules) as result:
            task.measurement(model, batch).backward()  # summed over rows: each row's gradient is its own
        model.zero_grad(set_to_none=True)
        scores[lo:lo + len(batch)].scatter_(1, result.indices.cpu(), result.scores.float().cpu())
    data.log(f"bergson: {len(rows)} queries scored against {n_docs} documents "
             f"({'cosine' if options.unit_norm else 'inner product'}) in {time.perf_counter() - start:.1f}s")
    return scores


__all__ = ["BergsonOptions", "bergson_scores", "build_index", "gradient_model", "labelled_dataset",
           "tracked_modules"]
