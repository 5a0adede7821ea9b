"""Strict JSON <-> dataclass conversion for wire messages.

Both ends decode every message they receive, so a version mismatch or a bug shows up as a
:class:`ProtocolError` naming the field, not as a ``KeyError`` deep in a handler. Only the shapes the
protocol uses are supported: ``str``, ``int``, ``float``, ``bool``, ``Any``, ``X | None``, ``list[X]``,
``dict[str, X]`` and nested message dataclasses.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from packfleet.errors import ProtocolError

M = TypeVar("M")


@functools.cache
def _fields(cls: Any) -> tuple[tuple[str, Any, bool], ...]:
    hints = get_type_hints(cls)
    return tuple(
        (
            f.name,
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )


def decode(cls: type[M], data: Any, *, where: str | None = None) -> M:
    """Build message ``cls`` from parsed JSON, refusing missing, unknown or mistyped fields."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = _fields(cast(Any, cls))
    names = {name for name, _, _ in known}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ProtocolError(f"{where}: unknown field(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, hint, required in known:
        if name not in data:
            if required:
                raise ProtocolError(f"{where}: missing field {name!r}")
            continue
        values[name] = _convert(hint, data[name], f"{where}.{name}")
    return cls(**values)


#: The range of a wire integer, as the OpenAPI document states it (``format: int64``).
INT64 = (-(2**63), 2**63 - 1)


def _convert(hint: Any, value: Any, where: str) -> Any:
    if hint is Any:
        return value
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except ProtocolError as exc:
                errors.append(exc.message)
        raise ProtocolError(errors[0] if len(errors) == 1 else f"{where}: no variant matches")
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = get_args(hint)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
        _, item = get_args(hint)
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in get_args(hint):
            allowed = ", ".join(repr(a) for a in get_args(hint))
            raise ProtocolError(f"{where}: {value!r} is not one of {allowed}")
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return decode(hint, value, where=where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # JSON has one number type: 2.0 is the integer 2 (JSON Schema's "integer" says so too).
    if hint is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    # Every integer on the wire is a 64-bit one (ids, counts): a larger one would fail in the
    # database driver, far from here, as a server error.
    wide = isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]
    if hint is int and wide:
        raise ProtocolError(f"{where}: {value} is out of the 64-bit integer range")
    # bool is a subclass of int: refuse True where a count is expected, and 1 where a flag is.
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    expected = getattr(hint, "__name__", str(hint))
    raise ProtocolError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")


def encode(message: Any) -> Any:
    """Turn a message dataclass (or lists/dicts of them) into plain JSON values."""
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return {f.name: encode(getattr(message, f.name)) for f in dataclasses.fields(message)}
    if isinstance(message, list | tuple):
        return [encode(v) for v in message]
    if isinstance(message, dict):
        return {str(k): encode(v) for k, v in message.items()}
    return message
