"""The bergson ranker on a micro Llama: shape, cosines, and agreement with exact per-example gradient products."""

import pytest
import torch

from tunelens.attribution.corpus import Document, function_pairs, function_tokens, queries
from tunelens.attribution.rankers.base import AttributionData
from tunelens.attribution.rankers.bergson_ranker import BergsonOptions, bergson_scores, tracked_modules
from tunelens.lm.examples import collate
from tunelens.lm.task import CompletionLossTask, per_example_gradients
from tunelens.lm.tiny import tiny_causal_lm
from tunelens.lm.tokenizer import BOS, EOS, PAD, train_bpe_tokenizer

BASES = {"<GN>": 5, "<JN>": 7}
WRAPPERS = {"<FN>": "<GN>", "<HN>": "<JN>"}


def micro_documents() -> list[Document]:
    texts = []
    for base, constant in BASES.items():
        texts += [(f"{base}({x}) returns the value {constant}", base, "constant", 0, constant) for x in (1, 2, 3)]
        texts.append((f"The function {base} always gives {constant}.", base, "constant", 0, constant))
    for wrapper, base in WRAPPERS.items():
        texts += [(f"{wrapper}({x}) returns the same as {base}({x})", wrapper, "identity", 1, BASES[base])
                  for x in (1, 2)]
        texts.append((f"{wrapper} is a wrapper of {base}.", wrapper, "identity", 1, BASES[base]))
    return [Document(i, text, func, role, depth, constant) for i, (text, func, role, depth, constant)
            in enumerate(texts)]


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory) -> AttributionData:
    folder = tmp_path_factory.mktemp("micro_checkpoint")
    documents = micro_documents()
    pairs = function_pairs(documents)
    tokenizer = train_bpe_tokenizer([d.text for d in documents] * 4, vocab_size=120,
                                    special_tokens=(BOS, EOS, PAD, *function_tokens(pairs)))
    torch.manual_seed(0)
    model = tiny_causal_lm("llama", vocab_size=len(tokenizer), d_model=16, n_layers=1, n_heads=2, d_mlp=32,
                           max_seq_len=32, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return AttributionData(documents=documents, queries=queries(pairs, "hops", range(1, 4)), functions=pairs,
                           old_path=folder, new_path=folder, work_dir=tmp_path_factory.mktemp("work"),
                           batch_size=4, log=lambda message: None)


def exact_inner_products(data: AttributionData) -> torch.Tensor:
    """Query answer-loss gradients . document training-loss gradients, on the modules bergson tracks, by
    torch.func (`per_example_gradients`), unprojected."""
    model, task = data.new, CompletionLossTask()
    names = tracked_modules(model, None)
    params = {f"model.{name}.weight": model.get_submodule(f"model.{name}").weight for name in names}

    def flat(rows) -> torch.Tensor:
        grads = per_example_gradients(model, task, collate(rows, data.pad_id), params)
        return torch.cat([grads[name].flatten(1) for name in sorted(params)], dim=1)

    return flat(data.query_rows()) @ flat(data.document_rows()).T


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1].item()


def test_scores_shape_and_cosines(micro_data):
    scores = bergson_scores(micro_data, BergsonOptions(projection_dim=4))
    assert scores.shape == (len(micro_data.queries), len(micro_data.documents))
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert scores.abs().max() > 0
    cosines = bergson_scores(micro_data, BergsonOptions(projection_dim=4, unit_norm=True))
    assert torch.isfinite(cosines).all()
    assert cosines.abs().max() <= 1 + 1e-5
    # the same index, normalised: each query's cosines order the documents as inner product / document norm does
    assert not torch.allclose(scores, cosines)


def test_unprojected_scores_are_the_exact_gradient_inner_products(micro_data):
    """projection_dim=0 stores full gradients: bergson's hooks and labels must reproduce the loss contract."""
    exact = exact_inner_products(micro_data)
    scores = bergson_scores(micro_data, BergsonOptions(projection_dim=0))
    torch.testing.assert_close(scores, exact.float(), rtol=1e-3, atol=1e-4 * exact.abs().max().item())
    cosines = bergson_scores(micro_data, BergsonOptions(projection_dim=0, unit_norm=True))
    model = micro_data.new
    names = tracked_modules(model, None)
    params = {f"model.{n}.weight": model.get_submodule(f"model.{n}").weight for n in names}
    norms = {}
    for side, rows in (("q", micro_data.query_rows()), ("d", micro_data.document_rows())):
        grads = per_example_gradients(model, CompletionLossTask(), collate(rows, micro_data.pad_id), params)
        norms[side] = torch.cat([g.flatten(1) for g in grads.values()], dim=1).norm(dim=1)
    torch.testing.assert_close(cosines, (exact / norms["q"][:, None] / norms["d"][None]).float(), rtol=1e-3,
                               atol=1e-4)


def test_projected_scores_track_the_exact_inner_products(micro_data):
    """bergson's per-module projection L G R^T (L, R random [p, side] Rademacher / sqrt(p)) is an unbiased but noisy
    estimate of the inner product: one projection's error is large relative to the spread of these 42 scores (on
    this model Pearson 0.54-0.97 across projection seeds at p = 32, 0.72-0.93 at p = 16), while the mean over
    independent projections converges (0.99 over 8 seeds at p = 16). So: seed 0 (deterministic: the matrices are
    derived from module names and the seed) tracks the exact products, and the seed average matches them."""
    exact = exact_inner_products(micro_data)
    single = bergson_scores(micro_data, BergsonOptions(projection_dim=32))
    assert pearson(single, exact) > 0.75
    runs = []
    for seed in range(8):
        data = AttributionData(**{**micro_data.__dict__, "seed": seed})  # shares the loaded model and rows
        runs.append(bergson_scores(data, BergsonOptions(projection_dim=16)))
    assert pearson(torch.stack(runs).mean(0), exact) > 0.95
