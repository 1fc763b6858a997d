"""Frozen-dataclass configs loaded from TOML and validated on load.

One dataclass per config concept. Field metadata carries the valid choices and ranges, so the
error for a bad value can name the file, the key and what is valid. Nested dataclasses map to
TOML tables.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10 fallback
    import tomli as tomllib

T = TypeVar("T")


def choice(default, choices, doc: str = ""):
    """A field whose value must be one of ``choices``."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices), "doc": doc})


# seeds reach numpy's generators, which take 0..2**32-1 (a negative one failed deep inside them with a traceback)
MAX_SEED = 2**32 - 1


def bounded(default, lo=None, hi=None, doc: str = ""):
    """A numeric field with inclusive bounds."""
    return dataclasses.field(default=default, metadata={"lo": lo, "hi": hi, "doc": doc})


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, where: str):
    """Check ``value`` against annotation ``tp``; return the (possibly converted) value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad values.

    ``where`` prefixes error messages (usually ``"file.toml: table"``).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    prefix = f"{where}." if where and not where.endswith(":") else where
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key; valid keys are: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        key = f"{prefix}{name}"
        value = _coerce(value, hints[name], key)
        choices = f.metadata.get("choices")
        if choices is not None:
            vals = value if isinstance(value, tuple) else (value,)
            for v in vals:
                if v not in choices:
                    raise ConfigError(
                        f"{key}: {v!r} is not valid; choose one of: {', '.join(map(str, choices))}"
                    )
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        if lo is not None and value is not None and value < lo:
            raise ConfigError(f"{key}: {value!r} is below the minimum {lo}")
        if hi is not None and value is not None and value > hi:
            raise ConfigError(f"{key}: {value!r} is above the maximum {hi}")
        kwargs[name] = value
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: required key is missing")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as exc:
            raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    return obj


def load(cls: type[T], path: str | Path, overrides: Mapping[str, Any] | None = None) -> T:
    """Load and validate ``cls`` from a TOML file. Errors name the file and the key."""
    data = read_toml(path)
    if overrides:
        data = deep_merge(data, overrides)
    return from_dict(cls, data, f"{path}:")


def deep_merge(base: Mapping, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def to_dict(obj, drop_none: bool = False) -> dict:
    """Dataclass -> plain dict (tuples become lists) for JSON/TOML output; with ``drop_none``,
    dataclass fields that are None (optional parts) are left out."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)
                    if not (drop_none and getattr(v, f.name) is None)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(obj)


def dumps_toml(data: Mapping, _prefix: str = "") -> str:
    """Minimal TOML writer for resolved configs (scalars, lists of scalars, nested tables)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} to TOML")
    lines, tables, arrays = [], [], []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, Mapping):
            tables.append((k, v))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, Mapping) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{k} = {val(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{_prefix}{k}"
        out += f"\n[{name}]\n" + dumps_toml(v, name + ".")
    for k, v in arrays:
        name = f"{_prefix}{k}"
        for x in v:
            out += f"\n[[{name}]]\n" + dumps_toml(x, name + ".")
    return out
