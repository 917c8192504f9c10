import math

import pytest
import torch
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.routing.orthogonality import flat_cosine, orthogonality_table, principal_angles

from .test_adapters import adapted
from .test_export import routed_run


def test_principal_angles_hand_computed():
    e1, e2, e3 = torch.eye(3)
    # span{e1, e2} vs span{e2 + e3}: the line makes 45 degrees with the plane (cos = 1/sqrt 2)
    angles = principal_angles(torch.stack([e1, e2], 1), (e2 + e3)[:, None])
    assert torch.allclose(angles, torch.tensor([45.0], dtype=torch.float64))
    # span{e1} vs span{e3}: orthogonal; span{e1, e2} vs itself, scaled: 0 and 0
    assert torch.allclose(principal_angles(e1[:, None], e3[:, None]), torch.tensor([90.0], dtype=torch.float64))
    assert torch.allclose(principal_angles(torch.stack([e1, e2], 1), 3 * torch.stack([e2, e1], 1)),
                          torch.zeros(2, dtype=torch.float64), atol=1e-5)
    assert len(principal_angles(torch.zeros(3, 2), e1[:, None])) == 0  # a zero branch spans nothing


def test_flat_cosine():
    assert flat_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])) == pytest.approx(1 / math.sqrt(2))
    assert flat_cosine(torch.zeros(2), torch.ones(2)) == 0.0


def test_table_and_command(tmp_path):
    model, _ = adapted("lora")
    rows = orthogonality_table(model)
    assert len(rows) == 7 and all(0 <= r["min_angle_deg"] <= r["mean_angle_deg"] <= 90 for r in rows)
    _, run_dir = routed_run(tmp_path)
    result = CliRunner().invoke(app, ["routing", "orthogonality", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "figures" / "orthogonality.png").is_file() and "q_proj" in result.output
