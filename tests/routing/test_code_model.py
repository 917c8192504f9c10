import pytest

from tunelens.config import UsageError
from tunelens.routing.code_model import TinyCodeConfig, code_texts, is_held_out, stdlib_files


def fake_stdlib(root):
    for path, text in {"os.py": "import sys\n", "json/decoder.py": "x = 1\n", "test/test_os.py": "assert 1\n",
                       "site-packages/pkg/mod.py": "y = 2\n", "email/__init__.py": "z = 3\n",
                       "encodings/cp999.py": "table = ()\n",
                       "notes.txt": "not python\n"}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    for i in range(8):
        (root / f"mod{i}.py").write_text(f"v = {i}\n")
    return root


def test_stdlib_files_skip_tests_and_site_packages(tmp_path):
    root = fake_stdlib(tmp_path)
    files = [str(p.relative_to(root)) for p in stdlib_files(root)]
    assert sorted(files) == ["email/__init__.py", "json/decoder.py", *[f"mod{i}.py" for i in range(8)], "os.py"]
    assert files == [str(p.relative_to(root)) for p in stdlib_files(root)]  # a fixed order


def test_held_out_split_is_a_pure_function_of_the_path():
    paths = [f"pkg/mod{i}.py" for i in range(2000)]
    held = [p for p in paths if is_held_out(p, 2.0)]
    assert held == [p for p in paths if is_held_out(p, 2.0)] and 20 <= len(held) <= 60


def test_code_texts_and_mbpp_solutions(tmp_path):
    root = fake_stdlib(tmp_path)
    config = TinyCodeConfig(held_out_percent=50.0, include_mbpp=False)
    train, held_out = code_texts(config, root)
    expected = ["z = 3\n", "x = 1\n", "import sys\n", *[f"v = {i}\n" for i in range(8)]]
    assert sorted(train + held_out) == sorted(expected) and train and held_out
    with_mbpp, _ = code_texts(config.model_copy(update={"include_mbpp": True}), root)
    assert len(with_mbpp) == len(train) + 717 and "\r" not in with_mbpp[-1]
    with pytest.raises(UsageError, match="raise max_chars or held_out_percent"):
        code_texts(TinyCodeConfig(held_out_percent=0.01, include_mbpp=False), root)


def test_the_registered_defaults_validate():
    from tunelens.registry import get_experiment

    config = get_experiment("tiny-code").load_config()
    assert isinstance(config, TinyCodeConfig) and config.seq_len == 256


def test_pretrain_tiny_code_end_to_end(tmp_path):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from typer.testing import CliRunner

    from tunelens.cli import app

    micro = ["steps=12", "max_chars=1500000", "held_out_percent=5", "d_model=32", "d_mlp=64", "vocab_size=400",
             "batch_size=2", "seq_len=64", "n_samples=1", "include_mbpp=false"]
    args = ["pretrain", "tiny-code", "--out", str(tmp_path / "run")] + [x for item in micro for x in ("--set", item)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "model" / "pretrain_summary.json").read_text())
    assert summary["vocab_size"] == 400 and summary["python"] and summary["eval_loss"] < summary["eval_loss_initial"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    assert model.config.max_position_embeddings == 64 and tokenizer("def f():")["input_ids"]
