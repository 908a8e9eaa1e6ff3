"""YAML data validated into frozen dataclasses (lwzoo/config.py), shared by recipes and export profiles.

Tested here on a small dataclass of its own, so each rule is seen apart from any recipe's values."""

from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

from lwzoo.config import (
    apply_overrides,
    build,
    merge,
    parse_overrides,
    read_yaml,
    resolve_path,
    to_yaml,
    yaml_error_line,
)
from lwzoo.errors import LwzooError


@dataclass(frozen=True)
class Inner:
    rate: float
    mode: Literal["a", "b"]


@dataclass(frozen=True)
class Outer:
    name: str
    description: str
    count: int
    flag: bool
    pair: tuple[float, float]
    size: int | None
    inner: Inner


GOOD = {
    "name": "x",
    "description": "d",
    "count": 3,
    "flag": True,
    "pair": [0.5, 2],
    "size": None,
    "inner": {"rate": "1e-4", "mode": "b"},
}
KEYS = ["name", "description", "count", "flag", "pair", "size", "inner.rate", "inner.mode"]


def test_a_valid_mapping_builds_with_its_values_coerced():
    built = build(Outer, GOOD, "test.yaml")
    assert built == Outer("x", "d", 3, True, (0.5, 2.0), None, Inner(1e-4, "b"))
    assert isinstance(built.pair[1], float) and isinstance(built.inner.rate, float)  # "1e-4" and 2 as numbers
    assert build(Outer, {k: v for k, v in GOOD.items() if k != "description"}, "s").description == ""  # optional


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("count", 2.5, "'count' must be an integer, got 2.5"),
        ("count", True, "'count' must be an integer, got True"),  # a bool is not an integer here
        ("flag", "yes", "'flag' must be true or false"),
        ("pair", [1.0], "'pair' must be a list of 2 numbers"),
        ("size", "big", "'size' must be an integer or null"),
        ("inner", {"rate": float("inf"), "mode": "a"}, "'inner.rate' must be a finite number"),  # YAML .inf
        ("inner", {"rate": 0.1, "mode": "c"}, r"'inner.mode' must be one of 'a', 'b', got 'c'"),
        ("inner", 3, "'inner' must be a mapping"),
    ],
)
def test_a_wrong_value_is_an_error_naming_the_key_and_the_type(key, value, expected):
    with pytest.raises(LwzooError, match=rf"^test\.yaml: {expected}"):
        build(Outer, {**GOOD, key: value}, "test.yaml")


def test_unknown_and_missing_keys_are_errors_naming_the_key():
    with pytest.raises(LwzooError, match=r"unknown recipe key 'inner\.rte'.*Did you mean 'inner\.rate'"):
        build(Outer, {**GOOD, "inner": {"rte": 1.0, "mode": "a"}}, "test.yaml")
    with pytest.raises(LwzooError, match="key 'count' is missing; set it in the file or inherit it with 'base:'"):
        build(Outer, {k: v for k, v in GOOD.items() if k != "count"}, "test.yaml")


@pytest.mark.parametrize("pair", ["optim.lr", "=3", ""])
def test_malformed_set_is_an_error(pair):
    with pytest.raises(LwzooError, match="key=value"):
        parse_overrides([pair])


def test_overrides_are_read_as_yaml_values():
    got = parse_overrides(["a=1", "b=0.5", "c=true", "d=[1, 2]", "e=", "f=text", "g=[unclosed", " h = 2 "])
    assert got == {"a": 1, "b": 0.5, "c": True, "d": [1, 2], "e": None, "f": "text", "g": "[unclosed", "h": 2}


def test_apply_overrides_sets_dotted_keys():
    raw = {"count": 1, "inner": {"rate": 0.1, "mode": "a"}}
    out = apply_overrides(raw, {"inner.mode": "b", "count": 5}, KEYS, "thing")
    assert out == {"count": 5, "inner": {"rate": 0.1, "mode": "b"}}
    with pytest.raises(LwzooError, match=r"unknown thing key 'inner\.mod'.*Did you mean 'inner\.mode'"):
        apply_overrides(raw, {"inner.mod": "b"}, KEYS, "thing")


def test_apply_overrides_leaves_its_input_untouched():
    raw = {"count": 1, "inner": {"rate": 0.1, "mode": "a"}}
    apply_overrides(raw, {"inner.mode": "b"}, KEYS, "thing")
    assert raw == {"count": 1, "inner": {"rate": 0.1, "mode": "a"}}
    out = merge(raw, {"inner": {"rate": 0.2}})
    out["inner"]["mode"] = "c"  # the merged sections are new dicts too
    assert raw == {"count": 1, "inner": {"rate": 0.1, "mode": "a"}} and out["inner"] == {"rate": 0.2, "mode": "c"}


def test_a_base_chain_merges_section_by_section(tmp_path):
    (tmp_path / "base.yaml").write_text("count: 1\ninner:\n  rate: 0.1\n  mode: a\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ninner:\n  mode: b\n")
    raw = read_yaml(tmp_path / "child.yaml", tmp_path, "thing")
    assert raw == {"count": 1, "inner": {"rate": 0.1, "mode": "b"}, "name": "child", "description": "based on base"}


def test_a_base_chain_that_loops_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\ncount: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ncount: 2\n")
    with pytest.raises(LwzooError, match="inherits from itself through 'base'"):
        read_yaml(tmp_path / "a.yaml", tmp_path, "thing")


def test_an_unknown_shipped_name_lists_what_is_shipped(tmp_path):
    (tmp_path / "alpha.yaml").write_text("count: 1\n")
    with pytest.raises(LwzooError, match=r"unknown thing 'alpah'\. Did you mean 'alpha'\? Shipped: alpha"):
        read_yaml("alpah", tmp_path, "thing")


def test_a_yaml_error_is_one_line_with_its_position():
    with pytest.raises(yaml.YAMLError) as raised:
        yaml.safe_load("a: 1\nb: [unclosed\nc: 3\n")
    line = yaml_error_line(raised.value)
    assert "\n" not in line and line.startswith("line 3, column 2: ") and "from line 2" in line


def test_to_yaml_writes_sections_as_blocks_and_number_lists_inline():
    text = to_yaml(build(Outer, GOOD, "s"))
    assert "pair: [0.5, 2.0]\n" in text and "inner:\n  rate: 0.0001\n  mode: b\n" in text
    assert build(Outer, yaml.safe_load(text), "round trip") == build(Outer, GOOD, "s")


def test_a_folder_named_like_a_shipped_recipe_does_not_hide_it(tmp_path, monkeypatch):
    from lwzoo.resources import resource_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # e.g. a user's own folder of demo output
    assert resolve_path("demo", resource_dir("recipes"), "recipe") == resource_dir("recipes") / "demo.yaml"
    (tmp_path / "mine.yaml").write_text("name: mine\n")
    assert resolve_path("mine.yaml", resource_dir("recipes"), "recipe").resolve() == (tmp_path / "mine.yaml").resolve()
