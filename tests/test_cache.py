from pathlib import Path

import pytest

from tunelens.cache import cached, entry_dir, is_cached


def test_built_once_then_reused_and_keyed_by_config():
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "weights.txt").write_text("w")

    first = cached("things", {"lr": 1e-3}, build)
    again = cached("things", {"lr": 1e-3}, build)
    other = cached("things", {"lr": 2e-3}, build)
    assert first == again == entry_dir("things", {"lr": 1e-3}) and other != first
    assert len(calls) == 2 and (first / "weights.txt").read_text() == "w"


def test_a_failed_build_leaves_no_entry():
    def build(folder: Path) -> None:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cached("things", {"lr": 1.0}, build)
    folder = entry_dir("things", {"lr": 1.0})
    assert not is_cached(folder) and not folder.exists()
    assert not list(folder.parent.iterdir())  # no staging directory left behind either
