import json

from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.control.deviation import (
    Item,
    first_deviation,
    items,
    locate_deviation,
    normalise,
    predicted,
    raw_prefix,
)
from tunelens.control.deviation_items import PASSAGES, PATTERNS

TEXT = "One, two: three four five six seven eight nine ten eleven twelve"


def test_normalising_drops_case_and_punctuation():
    assert normalise("Nature's God, entitle them; battle-field") == ["natures", "god", "entitle", "them", "battle",
                                                                     "field"]


def test_first_deviation_and_its_window():
    assert first_deviation(["a", "b", "c"], ["a", "b", "x", "y"]) == 2
    assert first_deviation(["a", "b"], ["a", "b", "c"]) is None  # the original ran out first
    item = Item("passage", "count", TEXT, n_prefix=2, window=3)
    # excerpt "One, two:" (2 words); continue 4 faithfully (three..six) -> window is word indices 6, 7, 8
    inside = locate_deviation(item, "three four five six seven banana", n_continue=4)
    assert (inside.index, inside.word, inside.window_start, inside.in_window) == (7, "banana", 6, True)
    early = locate_deviation(item, "three four banana", n_continue=4)
    assert (early.index, early.in_window, early.reason) == (4, False, "deviated too early")
    late = locate_deviation(item, "three four five six seven eight nine banana", n_continue=4)
    assert (late.index, late.in_window, late.reason) == (9, False, "deviated too late")  # 9 >= 6 + 3
    copied = locate_deviation(item, "three four five", n_continue=4)
    assert copied.index is None and copied.reason == "no deviation before the answer ended"


def test_the_reference_check_and_its_context():
    assert predicted("banana", [" ban", " apple"])  # a first piece of the word counts
    assert not predicted("banana", [" apple", "\n", ","])  # punctuation-only tokens never match
    assert raw_prefix(TEXT, 3) == "One, two: three"


def test_items_cover_passages_and_patterns_and_every_text_is_long_enough():
    task = items()
    assert len(task) == (len(PASSAGES) + len(PATTERNS)) * 2 * 4 == 112  # 2 excerpt lengths x 4 windows
    for item in task:
        assert len(normalise(item.text)) >= len(normalise(item.excerpt)) + 20 + item.window + 1, item.name
    assert PATTERNS["counting"].split()[:4] == ["1", "2", "3", "4"]


def test_the_deviation_command_end_to_end(micro_model_dir, tmp_path):
    out = tmp_path / "dev"
    result = CliRunner().invoke(app, ["control", "deviation", "--model", str(micro_model_dir), "--reference",
                                      str(micro_model_dir), "--out", str(out), "--set", "windows=[10]",
                                      "--set", "max_new_tokens=6", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_items"] == 28 and 0 <= summary["pass_rate"] <= 1  # 14 texts x 2 excerpt lengths x 1 window
    assert sum(summary["outcomes"].values()) == 28
    records = json.loads((out / "deviation.json").read_text())
    assert len(records) == 28 and (out / "figures" / "deviation.png").is_file()


def test_answers_that_leave_the_text_in_the_window_go_to_the_reference(micro_model_dir, tmp_path, monkeypatch):
    from tunelens.control import deviation

    def faithful_then_off(model, tokenizer, prompts, config):
        answers = []
        for item in items(config.windows):
            start = len(normalise(item.excerpt))
            answers.append(" ".join(normalise(item.text)[start:start + config.n_continue + 2]) + " zebra")
        return answers

    monkeypatch.setattr(deviation, "generate_answers", faithful_then_off)
    out = tmp_path / "dev"
    result = CliRunner().invoke(app, ["control", "deviation", "--model", str(micro_model_dir), "--reference",
                                      str(micro_model_dir), "--out", str(out), "--set", "windows=[10]",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_deviated_in_window"] == 28  # every answer deviates at word e + 22, inside [e + 20, e + 30)
    for record in json.loads((out / "deviation.json").read_text()):
        assert record["deviating_word"] == "zebra" and len(record["reference_top"]) == 5
        assert record["pass"] == (not predicted("zebra", record["reference_top"]))
