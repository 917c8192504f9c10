"""Masked passes that skip the decoder layers before the first decomposed one give the same outputs, losses and
gradients as passes through the whole model, and the skipped layers do not run."""

import pytest
import torch

from tunelens.lm.layers import decoder_stack
from tunelens.lm.tiny import tiny_causal_lm
from tunelens.spd.component_model import ComponentModel, LayerMask, leading_blocks
from tunelens.spd.losses import ci_masked_recon_loss, kl_output_loss, prepare, stochastic_recon_loss
from tunelens.spd.targets import freeze
from tunelens.spd.targets.lm import logits_of

UP = "model.layers.2.mlp.up_proj"


def small_lm():
    torch.manual_seed(0)
    return freeze(tiny_causal_lm(vocab_size=50, d_model=16, n_layers=3, n_heads=2, max_seq_len=16))


def component_model(target, names, blocks=True):
    return ComponentModel(target, logits_of, {n: 3 for n in names}, "mlp", [4],
                          blocks=decoder_stack(target) if blocks else None)


def test_leading_blocks_are_those_before_the_first_decomposed_layer():
    blocks = ("model.layers", ["b0", "b1", "b2"])
    assert leading_blocks(blocks, [UP]) == ["b0", "b1"]
    assert leading_blocks(blocks, [UP, "model.layers.1.mlp.down_proj"]) == ["b0"]
    assert leading_blocks(blocks, ["model.layers.0.self_attn.q_proj"]) == []
    assert leading_blocks(blocks, ["model.embed_tokens", UP]) == []  # the embedding runs before every block
    assert leading_blocks(blocks, ["lm_head"]) == []
    assert leading_blocks(blocks, ["model.layers.9.mlp.up_proj"]) == []
    assert leading_blocks(None, [UP]) == []


def test_masked_pass_with_the_recorded_prefix_equals_the_whole_pass_and_skips_the_layers():
    target = small_lm()
    model = component_model(target, [UP, "model.layers.2.mlp.down_proj"])
    assert model.n_skippable_blocks == 2
    ids = torch.randint(0, 50, (3, 10))
    passed = model.run_target(ids)
    assert len(passed.prefix) == 2
    assert torch.equal(passed.out, logits_of(target, ids))  # recording changes nothing
    torch.manual_seed(1)
    masks = {n: LayerMask(mask=torch.rand(3, 10, 3), delta_mask=torch.rand(3, 10)) for n in model.names}
    deltas = model.weight_deltas()
    calls = []
    handle = target.model.layers[0].self_attn.register_forward_hook(lambda *args: calls.append(1))
    try:
        whole = model.forward_masked(ids, masks, deltas)
        assert len(calls) == 1
        skipped = model.forward_masked(ids, masks, deltas, passed.prefix)
        assert len(calls) == 1  # layer 0 did not run
        model.forward_masked(ids, masks, deltas)
        assert len(calls) == 2  # and runs again once the pass is over
    finally:
        handle.remove()
    assert torch.allclose(skipped, whole, atol=1e-6)
    assert not any("forward" in vars(block) for block in target.model.layers)  # the blocks are restored


@pytest.mark.parametrize("loss", [stochastic_recon_loss, ci_masked_recon_loss])
def test_losses_and_gradients_with_the_skip_equal_those_without(loss):
    target = small_lm()
    ids = torch.randint(0, 50, (4, 12))
    results = []
    for blocks in (True, False):
        torch.manual_seed(2)
        model = component_model(target, [UP], blocks=blocks)
        inputs = prepare(model, ids)
        assert len(inputs.recon.prefix) == (2 if blocks else 0)
        torch.manual_seed(3)
        if loss is stochastic_recon_loss:
            value = loss(model, inputs, kl_output_loss, use_delta=True, n_samples=1)
        else:
            value = loss(model, inputs, kl_output_loss)
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (skip_value, skip_grads), (whole_value, whole_grads) = results
    assert torch.allclose(skip_value, whole_value, atol=1e-7)
    for a, b in zip(skip_grads, whole_grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_an_embedding_target_keeps_every_block():
    target = small_lm()
    model = component_model(target, ["model.embed_tokens"])
    assert model.n_skippable_blocks == 0
    assert model.run_target(torch.randint(0, 50, (2, 5))).prefix == []


def test_a_block_with_a_forward_of_its_own_gets_it_back():
    target = small_lm()
    block = target.model.layers[0]
    calls = []

    def wrapped(*args, **kwargs):  # as accelerate's device hooks set one on the instance
        calls.append(1)
        return type(block).forward(block, *args, **kwargs)

    block.forward = wrapped
    model = component_model(target, [UP])
    ids = torch.randint(0, 50, (2, 6))
    passed = model.run_target(ids)
    mask = {UP: LayerMask(mask=torch.ones(2, 6, 3))}
    model.forward_masked(ids, mask, prefix=passed.prefix)
    assert vars(block)["forward"] is wrapped and len(calls) == 1  # skipped in the masked pass, back after it
