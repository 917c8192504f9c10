from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError

from tunelens.attribution.rankers.base import AttributionData
from tunelens.attribution.rankers.kronfluence_ranker import KronfluenceOptions, kronfluence_scores, tracked_module_names
from tunelens.lm.examples import TokenizedExample, collate
from tunelens.lm.task import CompletionLossTask, per_example_gradients
from tunelens.lm.tiny import tiny_causal_lm

PAD = 0


class MicroData(AttributionData):
    """AttributionData over a model and hand-made rows (no checkpoints, no tokenizer files)."""

    def __init__(self, model, documents: list[TokenizedExample], queries: list[TokenizedExample], work_dir):
        super().__init__(documents=[None] * len(documents), queries=[None] * len(queries), functions=[], old_path="",
                         new_path="", work_dir=work_dir, log=lambda message: None)
        model.requires_grad_(False)
        self._cache.update({"model/new": model, "tokenizer": SimpleNamespace(pad_token_id=PAD),
                            "rows/documents": documents, "rows/queries": queries})


def micro(tmp_path, copy_of_query: int | None = None) -> MicroData:
    torch.manual_seed(0)
    model = tiny_causal_lm("llama", vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_mlp=32,
                           max_seq_len=32).eval()
    generator = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return [1, *torch.randint(3, 64, (n - 1,), generator=generator).tolist()]

    queries = []
    for i, n in enumerate((5, 6, 7)):
        prompt = ids(n)
        queries.append(TokenizedExample(prompt, [0] * (n - 1) + [1], i, n - 1))
    lengths = torch.randint(5, 13, (12,), generator=generator).tolist()
    documents = [TokenizedExample(row, [1] * len(row), i, 0) for i, row in enumerate(ids(n) for n in lengths)]
    if copy_of_query is not None:
        row = queries[copy_of_query].input_ids
        documents.insert(5, TokenizedExample(list(row), [1] * len(row), 5, 0))
        documents = [TokenizedExample(d.input_ids, d.loss_mask, i, 0) for i, d in enumerate(documents)]
    return MicroData(model, documents, queries, tmp_path)


def flat_gradients(model, rows, names) -> torch.Tensor:
    params = {f"{name}.weight": model.get_submodule(name).weight for name in names}
    grads = per_example_gradients(model, CompletionLossTask(), collate(rows, PAD), params)
    return torch.cat([grads[n].flatten(1) for n in params], dim=1)


def test_options_are_strict():
    assert KronfluenceOptions().strategy == "ekfac" and KronfluenceOptions().modules == "blocks"
    with pytest.raises(ValidationError):
        KronfluenceOptions(strategy="lissa")
    with pytest.raises(ValidationError):
        KronfluenceOptions(unknown=1)


def test_tracked_modules_are_the_blocks_linears_or_all(tmp_path):
    model = micro(tmp_path).new
    blocks = tracked_module_names(model, "blocks")
    assert len(blocks) == 7 and all(name.startswith("model.layers.0.") for name in blocks)
    assert tracked_module_names(model, "all") == [*blocks, "lm_head"]


def test_identity_scores_are_gradient_inner_products(tmp_path):
    data = micro(tmp_path)
    scores = kronfluence_scores(data, KronfluenceOptions(strategy="identity", train_batch_size=5,
                                                         query_batch_size=2))
    assert scores.shape == (3, 12) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    names = tracked_module_names(data.new, "blocks")
    reference = flat_gradients(data.new, data.query_rows(), names) @ flat_gradients(data.new, data.document_rows(),
                                                                                   names).T
    # kronfluence returns +grad(query loss) . grad(document loss): no sign flip, helpful = positive
    assert torch.allclose(scores, reference, rtol=1e-3, atol=1e-3 * reference.abs().max().item())


def test_ekfac_ranks_a_copy_of_the_query_first_and_leaves_the_model_alone(tmp_path):
    data = micro(tmp_path, copy_of_query=0)
    before = {name: p.clone() for name, p in data.new.named_parameters()}
    scores = kronfluence_scores(data, KronfluenceOptions(train_batch_size=4))
    assert scores.shape == (3, 13) and torch.isfinite(scores).all()
    assert scores[0].argsort(descending=True)[:2].tolist().count(5) == 1, scores[0]
    assert (tmp_path / "kronfluence").is_dir()
    # the model other rankers use is not wrapped or changed
    assert type(data.new.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert all(torch.equal(p, before[name]) for name, p in data.new.named_parameters())
