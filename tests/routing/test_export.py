import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.routing.adapters import save_adapters, scales
from tunelens.routing.export import load_routed

from .test_adapters import IDS, adapted, micro_model


def routed_run(tmp_path, kind="lora"):
    """A run directory as `tunelens run caps` leaves it: adapters/ naming a saved base model."""
    base_dir = tmp_path / "base"
    model, settings = adapted(kind)
    micro_model().save_pretrained(base_dir)
    save_adapters(model, settings, tmp_path / "run" / "adapters", base_model=str(base_dir))
    return model, tmp_path / "run"


def test_export_equals_bad_ablated_and_loads_with_plain_transformers(tmp_path):
    model, run_dir = routed_run(tmp_path)
    result = CliRunner().invoke(app, ["routing", "export", str(run_dir), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    with scales(model, 1.0, 0.0):
        expected = model(input_ids=IDS).logits
    with scales(model, 1.0, 1.0):
        full = model(input_ids=IDS).logits
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    got = merged(input_ids=IDS).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, full, atol=1e-3)  # the bad branch mattered, and is gone


def test_export_of_mlp_adapters_is_a_usage_error(tmp_path):
    _, run_dir = routed_run(tmp_path, kind="mlp")
    result = CliRunner().invoke(app, ["routing", "export", str(run_dir), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "only LoRA adapters" in result.output, result.output


def test_run_dir_without_adapters_and_model_dir_without_model(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["routing", "export", str(tmp_path / "empty"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "no dual adapters" in result.output and "Traceback" not in result.output
    (tmp_path / "not_a_model").mkdir()
    result = CliRunner().invoke(app, ["run", "caps", "--out", str(tmp_path / "r"), "--set",
                                      f"model={tmp_path / 'not_a_model'}", "--device", "cpu"])
    assert result.exit_code == 2 and "is a directory but not a Hugging Face model" in result.output, result.output
    assert len(result.output.strip().splitlines()) <= 2
    loaded, settings = load_routed(routed_run(tmp_path / "again")[1])
    assert settings.kind == "lora" and loaded is not None
