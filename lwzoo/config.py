"""YAML data validated into frozen dataclasses: shared by recipes and export profiles.

A file names every field, or inherits from another file with ``base:`` and overrides part of it.
Unknown keys, missing keys and values of the wrong type are errors that name the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import LwzooError


class FlowListDumper(yaml.SafeDumper):
    """Sections as blocks, number lists inline: ``crop_scale: [0.2, 1.0]``."""


FlowListDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def plain(obj: Any) -> Any:
    """Tuples to lists, recursively: what YAML and JSON can hold."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def to_yaml(obj: Any) -> str:
    return yaml.dump(plain(dataclasses.asdict(obj)), Dumper=FlowListDumper, sort_keys=False)


def field_types(cls: type, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update(field_types(tp, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = tp
    return out


def resolve_path(name_or_path: str | Path, folder: Path, kind: str) -> Path:
    """A shipped name (a file ``folder/<name>.yaml``) or a path to a YAML file, as a path. A folder that happens
    to share a shipped name in the working directory (``./demo``) does not hide the shipped recipe."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise LwzooError(f"{kind} file '{path}' does not exist")
        return path
    shipped = folder / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    close = difflib.get_close_matches(str(name_or_path), names, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LwzooError(f"unknown {kind} '{name_or_path}'.{hint} Shipped: {', '.join(names)}; or pass a .yaml path")


def read_yaml(name_or_path: str | Path, folder: Path, kind: str, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A file's mapping with its ``base`` chain merged in; ``name`` defaults to the file's stem."""
    path = resolve_path(name_or_path, folder, kind).resolve()
    if path in seen:
        raise LwzooError(f"{kind} '{path}' inherits from itself through 'base'")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LwzooError(f"{kind} '{path}' is not valid YAML: {yaml_error_line(e)}; fix the file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LwzooError(
            f"cannot read {kind} '{path}' ({type(e).__name__}: {e}); pass a readable UTF-8 YAML file"
        ) from None
    if not isinstance(raw, dict):
        raise LwzooError(f"{kind} '{path}' must be a YAML mapping of sections, got {type(raw).__name__}")
    base = raw.pop("base", None)
    raw.setdefault("name", path.stem)
    if base is None:
        return raw
    relative = path.parent / str(base)
    parent = relative if relative.suffix in (".yaml", ".yml") else str(base)
    inherited = read_yaml(parent, folder, kind, (*seen, path))
    raw.setdefault("description", f"based on {inherited['name']}")
    return merge(inherited, raw)


def yaml_error_line(e: yaml.YAMLError) -> str:
    """A YAML parse error in one line (PyYAML's own message spans several, with a caret drawing)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        context = f"{context} from line {context_mark.line + 1}"
    return f"{where}{problem}" + (f" ({context})" if context else "")


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, section by section; neither input is changed (every nested
    section of the result is a new dict)."""
    out = {k: merge(v, {}) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["optim.lr=0.06", "moco.symmetric=true"]`` -> ``{"optim.lr": 0.06, "moco.symmetric": True}``."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LwzooError(f"--set expects key=value, got '{pair}' (for example --set optim.lr=0.06)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], keys: list[str], kind: str) -> dict[str, Any]:
    """Set dotted keys in a copy of ``raw``; an unknown key is an error naming close matches."""
    raw = merge(raw, {})
    for dotted, value in overrides.items():
        if dotted not in keys:
            close = difflib.get_close_matches(dotted, keys, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise LwzooError(f"unknown {kind} key '{dotted}'.{hint} Known keys: {', '.join(keys[:6])}, ...")
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LwzooError(f"{kind} section '{part}' must be a mapping")
        node[leaf] = value
    return raw


def build(cls: type, raw: Any, source: str, kind: str = "recipe", prefix: str = "") -> Any:
    """Validate a mapping into the dataclass ``cls`` (recursively), or raise LwzooError naming the key."""
    if not isinstance(raw, dict):
        raise LwzooError(f"{source}: '{prefix.rstrip('.') or kind}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    unknown = set(raw) - set(hints)
    if unknown:
        key = sorted(unknown)[0]
        candidates = [f"{prefix}{k}" for k in hints]
        close = difflib.get_close_matches(f"{prefix}{key}", candidates, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise LwzooError(f"{source}: unknown {kind} key '{prefix}{key}'.{hint}")
    values = {}
    for name, tp in hints.items():
        dotted = f"{prefix}{name}"
        if name not in raw:
            if name == "description":
                values[name] = ""
                continue
            raise LwzooError(
                f"{source}: {kind} key '{dotted}' is missing; set it in the file or inherit it with 'base:'"
            )
        if dataclasses.is_dataclass(tp):
            values[name] = build(tp, raw[name], source, kind, f"{dotted}.")
        else:
            values[name] = coerce(raw[name], tp, dotted, source)
    return cls(**values)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {len(typing.get_args(tp))} numbers"
    if origin in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    def fail() -> typing.NoReturn:
        raise LwzooError(f"{source}: '{key}' must be {type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, source)
            except LwzooError:
                pass
        fail()
    if origin is Literal:
        if value not in typing.get_args(tp):
            fail()
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            fail()
        return tuple(coerce(v, a, key, source) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool):
            fail()
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string; it is plainly a number
            try:
                number = float(value)
            except ValueError:
                fail()
        if number is None:
            fail()
        if not math.isfinite(number):  # .inf and .nan parse as floats, and no recipe value means either
            raise LwzooError(f"{source}: '{key}' must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    raise TypeError(f"unsupported field type {tp!r} for {key}")
