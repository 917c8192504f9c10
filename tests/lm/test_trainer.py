import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tunelens.config import Schedule, UsageError
from tunelens.lm.examples import TokenizedExample, collate
from tunelens.lm.tiny import tiny_causal_lm
from tunelens.lm.trainer import (
    Hooks,
    TrainSettings,
    _split,
    batch_indices,
    completion_loss,
    row_gradient_scale,
    train,
)

CPU = torch.device("cpu")


def micro_model(seed: int = 0):
    torch.manual_seed(seed)
    return tiny_causal_lm(vocab_size=40, d_model=16, n_layers=1, n_heads=2, d_mlp=32, max_seq_len=32)


def micro_rows(n: int = 24, seed: int = 0) -> list[TokenizedExample]:
    """Rows of different lengths whose loss covers a 'completion' at the end, as real examples do."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(4, 12, (1,), generator=generator))
        ids = torch.randint(3, 40, (length,), generator=generator).tolist()
        n_prompt = length // 2
        rows.append(TokenizedExample(ids, [0] * n_prompt + [1] * (length - n_prompt), i, n_prompt))
    return rows


SETTINGS = TrainSettings(steps=6, batch_size=8, lr=3e-3, lr_schedule=Schedule(kind="cosine", warmup_frac=0.2),
                         checkpoint_every=2, log_every=1)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_batches_cover_every_example_once_per_epoch_and_depend_only_on_the_step():
    # 10 examples, batches of 4: steps 0-4 hold positions 0-19, i.e. exactly two epochs
    seen = [i for step in range(5) for i in batch_indices(10, 4, step, seed=3)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]  # each epoch reshuffled
    assert batch_indices(10, 4, 3, seed=3) == seen[12:16]  # no hidden sampler state
    assert batch_indices(10, 4, 0, seed=4) != batch_indices(10, 4, 0, seed=3)


def test_micro_batches_are_exactly_as_many_as_asked():
    rows = micro_rows(7)
    chunks = _split(rows, 3)
    assert [len(c) for c in chunks] == [2, 3, 2] and [r for c in chunks for r in c] == rows


def test_gradient_accumulation_does_not_change_the_result():
    results = []
    for accum in (1, 4):
        model = micro_model()
        train(model, micro_rows(), SETTINGS.model_copy(update={"grad_accum_steps": accum}), pad_id=0, seed=0,
              device=CPU)
        results.append(weights(model))
    for name in results[0]:
        assert torch.allclose(results[0][name], results[1][name], atol=1e-6), name


def test_training_lowers_the_loss_on_the_masked_tokens():
    model, rows = micro_model(), micro_rows()
    batch = collate(rows, 0)
    before = completion_loss(model, batch, model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits)
    train(model, rows, SETTINGS.model_copy(update={"steps": 40, "lr": 1e-2}), pad_id=0, seed=0, device=CPU)
    after = completion_loss(model, batch, model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits)
    assert after.mean() < before.mean() - 0.5


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    uninterrupted = micro_model()
    train(uninterrupted, micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU, checkpoint_dir=tmp_path / "a",
          fingerprint="x")
    interrupted = micro_model()
    train(interrupted, micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU, checkpoint_dir=tmp_path / "b",
          fingerprint="x", stop_after=3)  # killed after step 3: the checkpoint holds step 2
    resumed = micro_model(seed=1)  # a fresh process: other initial weights, which the checkpoint replaces
    result = train(resumed, micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU, checkpoint_dir=tmp_path / "b",
                   fingerprint="x")
    assert result.resumed_from == 2
    for name, value in weights(uninterrupted).items():
        assert torch.allclose(value, weights(resumed)[name], atol=1e-6), name
    with pytest.raises(UsageError, match="different config"):
        train(micro_model(), micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU, checkpoint_dir=tmp_path / "b",
              fingerprint="other")


def test_extra_loss_is_added_per_row():
    model = micro_model()
    calls = []

    def extra(model, batch, logits):
        calls.append(len(batch))
        return logits.pow(2).mean(dim=(1, 2))  # a penalty on the logits' size

    train(model, micro_rows(), SETTINGS.model_copy(update={"steps": 2}), pad_id=0, seed=0, device=CPU,
          hooks=Hooks(extra_loss=extra))
    plain = micro_model()
    train(plain, micro_rows(), SETTINGS.model_copy(update={"steps": 2}), pad_id=0, seed=0, device=CPU)
    assert calls == [8, 8]
    assert not torch.allclose(weights(model)["lm_head.weight"], weights(plain)["lm_head.weight"])


def test_row_gradient_scale_matches_a_per_row_reference():
    """Gating the MLP's output gradient for row 1 leaves the MLP's gradient that of row 0 alone; a parameter after
    the MLP (the final norm) still gets the gradient of both rows. (Parameters before it lose row 1's gradient
    along the path through the MLP only.)"""
    model, rows = micro_model(), micro_rows(2)
    mlp = model.model.layers[0].mlp
    batch = collate(rows, 0)

    def gradients(scale=None, only=None):
        model.zero_grad()
        chosen = batch if only is None else collate([rows[only]], 0)
        context = row_gradient_scale([mlp], scale) if scale is not None else torch.enable_grad()
        with context:
            logits = model(input_ids=chosen.input_ids, attention_mask=chosen.attention_mask).logits
            completion_loss(model, chosen, logits).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    gated = gradients(torch.tensor([1.0, 0.0]))
    row0, both = gradients(only=0), gradients()
    mlp_names = [name for name in gated if ".mlp." in name]
    assert len(mlp_names) == 3
    for name in mlp_names:
        assert torch.allclose(gated[name], row0[name], atol=1e-6), name
        assert not torch.allclose(gated[name], both[name], atol=1e-4), name
    assert torch.allclose(gated["model.norm.weight"], both["model.norm.weight"], atol=1e-6)
    assert not mlp._forward_hooks  # the hook is gone after the block


def test_row_gradient_scale_through_the_loop_freezes_a_module_for_gated_rows():
    model = micro_model()
    mlp = model.model.layers[0].mlp
    before = weights(mlp)
    hooks = Hooks(around_batch=lambda model, batch: row_gradient_scale([mlp], torch.zeros(len(batch))))
    train(model, micro_rows(), SETTINGS.model_copy(update={"steps": 3}), pad_id=0, seed=0, device=CPU, hooks=hooks)
    assert all(torch.equal(before[name], value) for name, value in weights(mlp).items())
    assert not torch.equal(weights(model)["lm_head.weight"], micro_model().lm_head.weight)


def test_batch_too_small_for_the_micro_batches_is_a_usage_error():
    with pytest.raises(UsageError, match="batch_size"):
        train(micro_model(), micro_rows(), SETTINGS.model_copy(update={"batch_size": 2, "grad_accum_steps": 4}),
              pad_id=0, seed=0, device=CPU)


# ---------------------------------------------------------------------------------------------- two ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from tunelens import distributed
    from tunelens.lm.trainer import mean_loss

    distributed.setup(CPU)
    model = micro_model()
    train(model, micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU)
    held_out = mean_loss(model, micro_rows(10, seed=1), pad_id=0)
    if rank == 0:
        torch.save({"weights": weights(model), "held_out": held_out}, out)
    distributed.barrier()  # leave the group together: a rank that tears down alone can abort its peer's gloo threads
    distributed.teardown()


def test_two_cpu_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    out = str(tmp_path / "ranks.pt")
    mp.spawn(_rank_main, args=(2, _free_port(), out), nprocs=2, join=True)
    two = torch.load(out, weights_only=True)
    from tunelens.lm.trainer import mean_loss

    one = micro_model()
    train(one, micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU)
    assert two["held_out"] == pytest.approx(mean_loss(one, micro_rows(10, seed=1), pad_id=0), abs=1e-6)
    for name, value in weights(one).items():
        assert torch.allclose(value, two["weights"][name], atol=1e-6), name


def mlp_and_rest(model):
    params = dict(model.named_parameters())
    return {"mlp": [p for n, p in params.items() if ".mlp." in n],
            "rest": [p for n, p in params.items() if ".mlp." not in n]}


def test_named_groups_step_only_when_the_global_batch_says_so(tmp_path):
    seen = []

    def only_rest_on_even_documents(rows):
        seen.append(len(rows))
        return {"rest"} if all(r.index % 2 == 0 for r in rows) else {"mlp", "rest"}

    model = micro_model()
    before = weights(model.model.layers[0].mlp)
    hooks = Hooks(param_groups=mlp_and_rest, groups_to_step=lambda rows: {"rest"})
    train(model, micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU, hooks=hooks)
    assert all(torch.equal(before[n], v) for n, v in weights(model.model.layers[0].mlp).items())  # never stepped
    assert not torch.equal(weights(model)["lm_head.weight"], micro_model().lm_head.weight)
    # resuming restores every group's optimiser and schedule
    hooks = Hooks(param_groups=mlp_and_rest, groups_to_step=only_rest_on_even_documents)
    whole = micro_model()
    train(whole, micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU, hooks=hooks)
    assert seen == [8] * SETTINGS.steps  # decided on the whole global batch
    cut = micro_model()
    train(cut, micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU, hooks=hooks, checkpoint_dir=tmp_path / "c",
          fingerprint="g", stop_after=5)
    resumed = micro_model(seed=2)
    train(resumed, micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU, hooks=hooks, checkpoint_dir=tmp_path / "c",
          fingerprint="g")
    for name, value in weights(whole).items():
        assert torch.allclose(value, weights(resumed)[name], atol=1e-6), name


def test_param_groups_must_cover_every_trainable_parameter_once():
    with pytest.raises(AssertionError, match="exactly once"):
        train(micro_model(), micro_rows(), SETTINGS, pad_id=0, seed=0, device=CPU,
              hooks=Hooks(param_groups=lambda model: {"mlp": mlp_and_rest(model)["mlp"]}))
