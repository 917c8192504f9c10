import pytest
import torch

from tunelens.config import Schedule
from tunelens.schedules import lr_scheduler, schedule_value


def test_schedules_endpoints_and_shapes():
    n = 11
    constant = [schedule_value(Schedule(kind="constant"), 2.0, s, n) for s in range(n)]
    assert constant == [2.0] * n
    cosine = [schedule_value(Schedule(kind="cosine", final_frac=0.1), 1.0, s, n) for s in range(n)]
    assert cosine[0] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.1)
    assert cosine[5] == pytest.approx(0.55)  # halfway down a half cosine: 0.1 + 0.9 * 0.5
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))
    linear = [schedule_value(Schedule(kind="linear"), 1.0, s, n) for s in range(n)]
    assert linear[5] == pytest.approx(0.5) and linear[-1] == pytest.approx(0.0)
    warm = [schedule_value(Schedule(kind="constant", warmup_frac=0.4), 1.0, s, 10) for s in range(10)]
    assert warm[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and warm[4:] == [1.0] * 6


def test_lr_scheduler_follows_schedule_value_and_resumes():
    schedule, n = Schedule(kind="cosine", warmup_frac=0.2, final_frac=0.1), 10
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=3.0)
    scheduler = lr_scheduler(optimizer, schedule, n)
    seen = []
    for _ in range(n):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([schedule_value(schedule, 3.0, s, n) for s in range(n)])
    # a scheduler rebuilt from a state dict continues where the first one stopped
    fresh_optimizer = torch.optim.SGD([param], lr=3.0)
    resumed = lr_scheduler(fresh_optimizer, schedule, n)
    half = lr_scheduler(torch.optim.SGD([param], lr=3.0), schedule, n)
    for _ in range(4):
        half.optimizer.step()
        half.step()
    resumed.load_state_dict(half.state_dict())
    fresh_optimizer.param_groups[0]["lr"] = resumed.get_last_lr()[0]
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(seen[4])
