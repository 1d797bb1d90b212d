"""One config mechanism: nested or flat YAML keys, one flag per leaf field, help from the class."""

import argparse
from dataclasses import dataclass, field

import pytest

from aloe_data.config_cli import (add_config_arguments, apply_overrides, field_docs, leaf_fields,
                                  overrides_from_args)


@dataclass
class Inner:
    """The inner section."""

    rate: float = 0.5         # how fast
    names: list = field(default_factory=list)  # which ones,
                                               # in order

    def __post_init__(self):
        if self.rate <= 0:
            raise ValueError("rate must be > 0")


@dataclass
class Outer:
    """The outer config."""

    steps: int = 10           # how many
    flag: bool = False        # on or off
    path: str | None = None   # where
    inner: Inner = field(default_factory=Inner)


def test_nested_and_flat_keys_set_the_same_leaves_and_sections_validate_again():
    a = apply_overrides(Outer(), {"inner": {"rate": 2}, "steps": "7", "flag": "yes", "path": "none"})
    b = apply_overrides(Outer(), {"rate": 2.0, "steps": 7, "flag": True})
    assert a == b and a.inner.rate == 2.0 and a.steps == 7 and a.path is None
    assert apply_overrides(Outer(), {"names": "x,y"}).inner.names == ["x", "y"]
    with pytest.raises(ValueError, match="unknown config key 'stepz'"):
        apply_overrides(Outer(), {"stepz": 1})
    with pytest.raises(ValueError, match="rate must be > 0"):
        apply_overrides(Outer(), {"rate": -1})
    with pytest.raises(ValueError, match="not a boolean"):
        apply_overrides(Outer(), {"flag": "perhaps"})
    # a section left out is not touched, and its keys are unknown
    assert set(leaf_fields(Outer(), exclude=("inner",))) == {"steps", "flag", "path"}
    with pytest.raises(ValueError, match="unknown config key 'rate'"):
        apply_overrides(Outer(), {"rate": 1.0}, exclude=("inner",))


def test_a_leaf_name_in_two_sections_is_refused():
    @dataclass
    class Clash:
        steps: int = 1
        inner: Outer = field(default_factory=Outer)

    with pytest.raises(ValueError, match="'steps' is in two sections"):
        leaf_fields(Clash())
    assert "steps" in leaf_fields(Clash(), exclude=("inner",))


def test_one_flag_per_leaf_with_the_class_comment_as_help_and_only_given_flags_count():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Outer())
    text = parser.format_help()
    assert "--steps INT" in text and "how many (default: 10)" in text and "--no-flag" in text
    assert "which ones, in order" in text, "continuation comment lines belong to the field"
    assert field_docs(Inner)["rate"] == "how fast"
    args = parser.parse_args(["--rate", "3", "--flag"])
    assert overrides_from_args(args, Outer()) == {"rate": "3", "flag": True}
    config = apply_overrides(Outer(), overrides_from_args(args, Outer()))
    assert config.inner.rate == 3.0 and config.flag and config.steps == 10
