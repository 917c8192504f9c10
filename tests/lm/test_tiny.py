import pytest
import torch
from transformers import AutoModelForCausalLM

from tunelens.lm.tiny import tiny_causal_lm


@pytest.mark.parametrize("architecture", ["llama", "olmo2"])
@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_saved_tiny_models_reload_with_plain_transformers(tmp_path, architecture, tie_embeddings):
    torch.manual_seed(0)
    model = tiny_causal_lm(architecture, vocab_size=64, d_model=16, n_layers=2, n_heads=2, max_seq_len=32,
                           tie_embeddings=tie_embeddings).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 64, (2, 10))
    assert type(reloaded).__name__.lower().startswith(architecture)
    assert torch.equal(model(input_ids=ids).logits, reloaded(input_ids=ids).logits)
    shared = reloaded.get_input_embeddings().weight.data_ptr() == reloaded.get_output_embeddings().weight.data_ptr()
    assert shared == tie_embeddings


def test_sizes_follow_the_arguments():
    model = tiny_causal_lm("llama", vocab_size=100, d_model=32, n_layers=3, n_heads=4, d_mlp=48)
    assert len(model.model.layers) == 3 and model.model.layers[0].mlp.up_proj.weight.shape == (48, 32)
    assert model.get_input_embeddings().weight.shape == (100, 32)
    with pytest.raises(ValueError, match="divisible"):
        tiny_causal_lm("llama", d_model=30, n_heads=4)
