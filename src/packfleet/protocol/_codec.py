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
from collections.abc import Callable
from typing import Any, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from packfleet.errors import ProtocolError

M = TypeVar("M")


#: Checks one value against one type hint and returns it converted; ``where`` names it in errors.
Converter = Callable[[Any, str], Any]


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
    result: M = _decoder(cast(Any, cls))(data, where or cls.__name__)
    return result


@functools.cache
def _decoder(cls: Any) -> Converter:
    """The checking constructor of message ``cls``, built once per class.

    Each hint is looked at once here instead of on every message: a worker and its master decode
    every lease, event batch and report they exchange, and walking the hints each time was a few
    per cent of both under load (make bench). What is accepted and every error message are the same.
    """
    known = [(name, _converter(hint), required) for name, hint, required in _fields(cls)]
    names = frozenset(name for name, _, _ in known)

    def build(data: Any, where: str) -> Any:
        if not isinstance(data, dict):
            raise ProtocolError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if not names.issuperset(data):
            unknown = sorted(set(data) - names)
            raise ProtocolError(f"{where}: unknown field(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, convert, required in known:
            if name not in data:
                if required:
                    raise ProtocolError(f"{where}: missing field {name!r}")
                continue
            values[name] = convert(data[name], f"{where}.{name}")
        return cls(**values)

    return build


#: The range of a wire integer, as the OpenAPI document states it (``format: int64``).
INT64 = (-(2**63), 2**63 - 1)


@functools.cache
def _converter(hint: Any) -> Converter:  # noqa: C901 - one branch per supported shape
    if hint is Any:
        return _as_is
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        nullable = type(None) in options
        variants = [_converter(option) for option in options if option is not type(None)]

        def union(value: Any, where: str) -> Any:
            if value is None and nullable:
                return None
            errors = []
            for variant in variants:
                try:
                    return variant(value, where)
                except ProtocolError as exc:
                    errors.append(exc.message)
            raise ProtocolError(errors[0] if len(errors) == 1 else f"{where}: no variant matches")

        return union
    if origin is list:
        (item_hint,) = get_args(hint)
        item = _converter(item_hint)

        def listing(value: Any, where: str) -> Any:
            if not isinstance(value, list):
                raise ProtocolError(f"{where}: expected a list, got {type(value).__name__}")
            return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]

        return listing
    if origin is dict:
        _, value_hint = get_args(hint)
        entry = _converter(value_hint)

        def mapping(value: Any, where: str) -> Any:
            if not isinstance(value, dict):
                raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
            return {str(k): entry(v, f"{where}.{k}") for k, v in value.items()}

        return mapping
    if origin is typing.Literal:
        allowed = get_args(hint)

        def literal(value: Any, where: str) -> Any:
            if value not in allowed:
                names = ", ".join(repr(a) for a in allowed)
                raise ProtocolError(f"{where}: {value!r} is not one of {names}")
            return value

        return literal
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _decoder(hint)
    if hint is str:
        return _text
    if hint is int:
        return _integer
    if hint is float:
        return _number
    return functools.partial(_scalar, hint)


def _as_is(value: Any, where: str) -> Any:
    return value


def _text(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return value
    raise _mistyped(str, value, where)


def _integer(value: Any, where: str) -> Any:
    # JSON has one number type: 2.0 is the integer 2 (JSON Schema's "integer" says so too).
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    # bool is a subclass of int: refuse True where a count is expected.
    if isinstance(value, int) and not isinstance(value, bool):
        # Every integer on the wire is a 64-bit one (ids, counts): a larger one would fail in the
        # database driver, far from here, as a server error.
        if not INT64[0] <= value <= INT64[1]:
            raise ProtocolError(f"{where}: {value} is out of the 64-bit integer range")
        return value
    raise _mistyped(int, value, where)


def _number(value: Any, where: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, float):
        return value
    raise _mistyped(float, value, where)


def _scalar(hint: Any, value: Any, where: str) -> Any:
    # bool is a subclass of int: refuse 1 where a flag is expected.
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _mistyped(hint, value, where)


def _mistyped(hint: Any, value: Any, where: str) -> ProtocolError:
    expected = getattr(hint, "__name__", str(hint))
    return ProtocolError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")


_PLAIN = frozenset({str, int, float, bool, type(None)})


def encode(message: Any) -> Any:
    """Turn a message dataclass (or lists/dicts of them) into plain JSON values."""
    kind: Any = type(message)
    if kind in _PLAIN:
        return message
    names = _names(kind)
    if names is not None:
        return {name: encode(getattr(message, name)) for name in names}
    if isinstance(message, list | tuple):
        return [encode(v) for v in message]
    if isinstance(message, dict):
        return {str(k): encode(v) for k, v in message.items()}
    return message


@functools.cache
def _names(kind: Any) -> tuple[str, ...] | None:
    """The field names of a dataclass type, None for any other type (looked up once per type)."""
    if dataclasses.is_dataclass(kind):
        return tuple(f.name for f in dataclasses.fields(kind))
    return None
