import pytest
import torch

from tunelens.config import UsageError
from tunelens.lm.adapters import (
    LoraSettings,
    adapters_disabled,
    add_lora,
    linear_leaf_names,
    load_adapter,
    lora_layers,
    merge,
    save_adapter,
    set_scale,
)
from tunelens.lm.tiny import tiny_causal_lm

IDS = torch.tensor([[1, 5, 9, 3, 7, 2]])


def micro_model(seed: int = 0):
    torch.manual_seed(seed)
    return tiny_causal_lm(vocab_size=40, d_model=16, n_layers=2, n_heads=2, d_mlp=32).eval()


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def trained_lora(settings=LoraSettings(r=4)):
    """A LoRA model whose B matrices have moved away from zero, as after training."""
    model = add_lora(micro_model(), settings)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return model.eval()


def test_zero_initialised_lora_leaves_logits_unchanged_and_only_it_trains():
    base = logits(micro_model())
    model = add_lora(micro_model(), LoraSettings(r=4))
    assert torch.equal(logits(model), base)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # q, k, v, o, gate, up, down in each of 2 layers, A and B each
    assert len(trainable) == 7 * 2 * 2


def test_scale_zero_and_disabling_both_give_the_base_model():
    base = logits(micro_model())
    model = trained_lora()
    adapted = logits(model)
    assert not torch.allclose(adapted, base, atol=1e-4)  # the adapter does something
    with adapters_disabled(model):
        assert torch.allclose(logits(model), base, atol=1e-6)
    assert torch.allclose(logits(model), adapted)  # back on after the block
    set_scale(model, "default", 0.0)
    assert torch.allclose(logits(model), base, atol=1e-6)
    set_scale(model, "default", 1.0)
    assert torch.allclose(logits(model), adapted, atol=1e-6)
    with pytest.raises(UsageError, match="no LoRA adapter named 'bad'"):
        set_scale(model, "bad", 0.0)


def test_save_load_round_trip_and_merge_give_the_same_logits(tmp_path):
    from peft import PeftModel

    model = trained_lora()
    adapted = logits(model)
    micro_model().save_pretrained(tmp_path / "base")
    save_adapter(model, tmp_path / "adapter", base_model_path=tmp_path / "base")
    reloaded = PeftModel.from_pretrained(micro_model(), str(tmp_path / "adapter")).eval()  # plain peft
    assert torch.allclose(logits(reloaded), adapted, atol=1e-6)
    assert torch.allclose(logits(load_adapter(micro_model(), tmp_path / "adapter")), adapted, atol=1e-6)
    merged = merge(model)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(logits(merged), adapted, atol=1e-5)
    with pytest.raises(UsageError, match="not a peft adapter directory"):
        load_adapter(micro_model(), tmp_path)


def test_named_adapters_and_layer_choice():
    model = add_lora(micro_model(), LoraSettings(r=2, target_modules=["up_proj"], layers=[1]), name="good")
    model = add_lora(model, LoraSettings(r=3, target_modules=["up_proj"], layers=[1]), name="bad")
    layers = list(lora_layers(model))
    assert len(layers) == 1 and set(layers[0].lora_A) == {"good", "bad"}
    assert layers[0].lora_A["bad"].weight.shape[0] == 3


def test_unknown_target_module_lists_the_models_names():
    with pytest.raises(UsageError, match="no linear layer named 'c_attn'.*q_proj"):
        add_lora(micro_model(), LoraSettings(target_modules=["c_attn"]))
    assert "q_proj" in linear_leaf_names(micro_model())
