import pytest
from pydantic import Field

from tunelens.config import (
    TunelensConfig,
    UsageError,
    apply_overrides,
    config_hash,
    load_config,
    parse_value,
)
from tunelens.registry import EXPERIMENTS


class Inner(TunelensConfig):
    width: int = 3


class Toy(TunelensConfig):
    lr: float = Field(1e-3)
    name: str = "a"
    inner: Inner = Field(default_factory=Inner)
    sizes: list[int] = Field(default_factory=lambda: [1])


def test_parse_value_types():
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("1e-3") == pytest.approx(1e-3)
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("[1, 2.5, x]") == [1, 2.5, "x"]
    assert parse_value("null") is None
    assert parse_value("cosine") == "cosine"


def test_overrides_nested_and_errors():
    assert apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=x"]) == {"a": {"b": 2, "c": "x"}}
    with pytest.raises(UsageError, match="key.path=value"):
        apply_overrides({}, ["novalue"])


def test_load_config_merges_yaml_then_sets(tmp_path):
    defaults = tmp_path / "d.yaml"
    defaults.write_text("lr: 0.1\ninner:\n  width: 5\n")
    user = tmp_path / "u.yaml"
    user.write_text("name: b\n")
    config = load_config(Toy, defaults, user, ["inner.width=7", "sizes=[2,3]"], {"seed": 4})
    assert (config.lr, config.name, config.inner.width, config.sizes, config.seed) == (0.1, "b", 7, [2, 3], 4)


@pytest.mark.parametrize(
    "text, assignments, message",
    [
        ("lr: 0.1\nlrr: 2\n", [], "unknown config key 'lrr'"),
        ("inner:\n  widht: 2\n", [], "unknown config key 'inner.widht'"),
        ("lr: fast\n", [], "bad value for 'lr'"),
        ("lr: [1\n", [], "unreadable YAML"),
        ("lr: 0.1\n", ["inner.width=wide"], "bad value for 'inner.width'"),
        ("- 1\n", [], "expected a mapping"),
    ],
)
def test_config_errors_are_one_line(tmp_path, text, assignments, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as err:
        load_config(Toy, path, None, assignments)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="config file not found"):
        load_config(Toy, tmp_path / "nope.yaml")


def test_config_hash_is_stable_and_sensitive():
    assert config_hash(Toy()) == config_hash(Toy())
    assert config_hash(Toy()) != config_hash(Toy(lr=0.5))


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_default_yaml_loads_into_its_config(name):
    experiment = EXPERIMENTS[name]
    assert experiment.defaults_path.is_file(), f"missing {experiment.defaults_path}"
    config = experiment.load_config()
    assert isinstance(config, experiment.config_class())
