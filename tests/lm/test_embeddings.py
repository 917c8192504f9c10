import pytest
import torch

from tunelens.lm.corpus import make_story
from tunelens.lm.embeddings import add_special_tokens, rows_at_median_norm
from tunelens.lm.loading import load_model, load_tokenizer
from tunelens.lm.tiny import tiny_causal_lm
from tunelens.lm.tokenizer import train_bpe_tokenizer


def test_rows_at_median_norm():
    existing = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 10.0]])  # norms 5, 1, 10: median 5
    rows = rows_at_median_norm(existing, 4, torch.Generator().manual_seed(0))
    assert rows.shape == (4, 2) and torch.allclose(rows.norm(dim=-1), torch.full((4,), 5.0))


def test_new_token_embeddings_tied(micro_lm):
    folder, _ = micro_lm
    model, tokenizer = load_model(folder), load_tokenizer(folder, padding_side="right")
    old = model.get_input_embeddings().weight.detach().clone()
    new_ids = add_special_tokens(model, tokenizer, ["<|a|>", "<|b|>"], torch.Generator().manual_seed(0))
    weight = model.get_input_embeddings().weight.detach()
    assert new_ids == [len(old), len(old) + 1] and weight.shape[0] == len(old) + 2
    assert torch.equal(weight[: len(old)], old)
    assert torch.allclose(weight[new_ids].norm(dim=-1), old.norm(dim=-1).median().expand(2), rtol=1e-5)
    assert not torch.allclose(weight[new_ids[0]], weight[new_ids[1]])
    assert model.get_output_embeddings().weight.data_ptr() == weight.data_ptr()  # still tied
    assert tokenizer("x <|b|>", add_special_tokens=False)["input_ids"][-1] == new_ids[1]


@pytest.mark.parametrize("n_spare_rows", [0, 5])
def test_new_token_embeddings_untied(n_spare_rows):
    tokenizer = train_bpe_tokenizer([make_story(0, i) for i in range(50)], vocab_size=280)
    n_old = len(tokenizer)
    torch.manual_seed(0)
    model = tiny_causal_lm(vocab_size=n_old + n_spare_rows, d_model=16, n_layers=1, n_heads=2, tie_embeddings=False)
    before = {name: m.weight.detach().clone() for name, m in
              [("in", model.get_input_embeddings()), ("out", model.get_output_embeddings())]}
    new_ids = add_special_tokens(model, tokenizer, ["<|a|>", "<|b|>"])
    assert new_ids == [n_old, n_old + 1]
    # spare rows (as in Qwen checkpoints) are reused, not appended after
    assert model.get_input_embeddings().weight.shape[0] == max(n_old + 2, n_old + n_spare_rows)
    for name, m in [("in", model.get_input_embeddings()), ("out", model.get_output_embeddings())]:
        weight = m.weight.detach()
        assert torch.equal(weight[:n_old], before[name][:n_old])
        median = before[name][:n_old].norm(dim=-1).median()
        assert torch.allclose(weight[new_ids].norm(dim=-1), median.expand(2), rtol=1e-5)
