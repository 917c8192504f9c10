import json
import sys
import types

import pytest
import torch

from tunelens.config import UsageError
from tunelens.control.models import canonical_base, check_adapter_base, slug


def test_one_name_per_base_model(tmp_path):
    assert canonical_base("qwen2.5-3b") == "Qwen/Qwen2.5-3B"  # alias -> hub id
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2.5-3B" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert canonical_base(str(snapshot)) == "Qwen/Qwen2.5-3B"  # a cached snapshot is its hub id
    plain = tmp_path / "my_model"
    plain.mkdir()
    assert canonical_base(str(plain)) == str(plain.resolve())
    assert slug("Qwen/Qwen2.5-3B") == "Qwen_Qwen2.5-3B"


def test_an_adapter_for_another_base_is_one_clear_error(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "Qwen/Qwen2.5-3B"}))
    check_adapter_base(adapter, "qwen2.5-3b")  # the same model under its alias
    with pytest.raises(UsageError, match="was trained on base model Qwen/Qwen2.5-3B, not on Qwen/Qwen2.5-7B"):
        check_adapter_base(adapter, "Qwen/Qwen2.5-7B")
    with pytest.raises(UsageError, match="not a peft adapter directory"):
        check_adapter_base(tmp_path, "Qwen/Qwen2.5-3B")


def test_4bit_loading_asks_for_nf4_with_double_quantisation(monkeypatch):
    from tunelens.lm.loading import quantization_config

    monkeypatch.setitem(sys.modules, "bitsandbytes", types.ModuleType("bitsandbytes"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = quantization_config("4bit", torch.device("cuda"), double_quant=True)
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant is True
    assert quantization_config("4bit", torch.device("cuda")).bnb_4bit_use_double_quant is False  # unchanged default
