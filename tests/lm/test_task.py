import torch

from tunelens.lm.examples import TokenizedExample, collate
from tunelens.lm.task import CompletionLossTask, per_example_gradients
from tunelens.lm.tiny import tiny_causal_lm
from tunelens.lm.trainer import completion_loss


def micro():
    torch.manual_seed(0)
    model = tiny_causal_lm(vocab_size=30, d_model=16, n_layers=1, n_heads=2, d_mlp=32).eval()
    rows = [TokenizedExample([1, 5, 9, 3, 7], [0, 0, 1, 1, 1], 0, 2),
            TokenizedExample([1, 4, 8], [0, 1, 1], 1, 1),
            TokenizedExample([1, 6, 2, 2], [1, 1, 1, 1], 2, 0)]
    return model, rows


def test_train_loss_is_the_trainers_objective_and_independent_of_the_batch():
    model, rows = micro()
    task, batch = CompletionLossTask(), collate(rows, 0)
    together = task.row_train_loss(model, batch)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.allclose(together, completion_loss(model, batch, logits))
    alone = torch.cat([task.row_train_loss(model, collate([r], 0)) for r in rows])
    assert torch.allclose(together, alone, atol=1e-6)  # padding and neighbours change nothing
    assert torch.isclose(task.train_loss(model, batch), together.sum())
    assert torch.allclose(task.row_measurement(model, batch), together)


def test_sampled_labels_come_from_the_model_and_are_seeded():
    model, rows = micro()
    batch = collate(rows, 0)
    first = CompletionLossTask(torch.Generator().manual_seed(1)).row_train_loss(model, batch, sample=True)
    again = CompletionLossTask(torch.Generator().manual_seed(1)).row_train_loss(model, batch, sample=True)
    other = CompletionLossTask(torch.Generator().manual_seed(2)).row_train_loss(model, batch, sample=True)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_per_example_gradients_match_one_row_at_a_time():
    model, rows = micro()
    task = CompletionLossTask()
    batched = per_example_gradients(model, task, collate(rows, 0))
    for i, row in enumerate(rows):
        model.zero_grad()
        task.train_loss(model, collate([row], 0)).backward()
        for name, p in model.named_parameters():
            assert torch.allclose(batched[name][i], p.grad, atol=1e-5), (i, name)
