"""Frozen configuration dataclasses built from plain mappings or YAML, in one place.

Every configuration object of cevit is a frozen dataclass. :func:`from_dict` builds one from a mapping
(recursing into nested dataclass fields), rejects unknown keys, checks simple types and converts lists to
tuples; :func:`load_yaml` reads a YAML file and does the same. Errors are :class:`~cevit.errors.ConfigError`
and name the file (when there is one) and the offending key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from cevit.errors import ConfigError

__all__ = ["from_dict", "to_dict", "load_yaml", "replace"]

T = TypeVar("T")


def _where(source: str | None, key: str) -> str:
    return f"{source}: {key}" if source else key


def _convert(tp: Any, value: Any, *, key: str, source: str | None) -> Any:
    """Convert ``value`` to the annotated type ``tp`` where that is unambiguous, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key=key, source=source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{_where(source, key)}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{_where(source, key)}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(source, key)}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, source=source, prefix=f"{key}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(source, key)}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, key=f"{key}[{i}]", source=source) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{_where(source, key)}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, key=f"{key}[{i}]", source=source) for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(source, key)}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_where(source, key)}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{_where(source, key)}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{_where(source, key)}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_where(source, key)}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str | None = None, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(source, prefix.rstrip('.') or cls.__name__)}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted((k for k in data if k not in fields), key=str)  # YAML keys may be numbers, null, ...
    if unknown:
        raise ConfigError(
            f"{_where(source, prefix.rstrip('.') or cls.__name__)}: unknown key(s) "
            f"{', '.join(repr(f'{prefix}{k}') for k in unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _convert(hints[name], value, key=prefix + name, source=source) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    except TypeError as exc:  # missing required fields
        raise ConfigError(f"{_where(source, prefix.rstrip('.') or cls.__name__)}: {exc}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON/YAML-ready dict of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


def replace(obj: T, **changes: Any) -> T:
    """Like :func:`dataclasses.replace`, but unknown keys raise ConfigError and values are type-checked."""
    data = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]
    unknown = sorted(set(changes) - set(data))
    if unknown:
        raise ConfigError(f"{type(obj).__name__}: unknown key(s) {unknown}; valid keys: {sorted(data)}")
    data.update(changes)
    return from_dict(type(obj), data)


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a YAML mapping from ``path`` and build ``cls`` from it."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: config file is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if data is None:
        data = {}
    return from_dict(cls, data, source=str(path))
