"""How one settings value is read from JSON and written back.

SSIS's own settings files mix JSON types: ``"MaxTaskCount": 10`` next to ``"PortNumber": "8391"`` and
``"TaskLogEnabled": "True"``. Each reader below therefore takes the JSON type *and* its string
spelling, and returns one Python type. A reader that refuses a value raises :class:`Invalid` with the
form it expected; the settings loader adds the file and the key.
"""

from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse
import uuid
from collections.abc import Callable, Collection
from datetime import timedelta
from typing import Any

from packfleet.config._home import StoreLocation
from packfleet.config._timespan import TIMESPAN_FORM, format_timespan, parse_timespan
from packfleet.errors import SettingsError
from packfleet.thumbprint import normalize_thumbprint, thumbprint_problem

Reader = Callable[[object], Any]
Writer = Callable[[Any], object]

_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://.*", re.DOTALL)


class Invalid(ValueError):
    """Raised by a reader when a value does not have the expected form (``expected``)."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def read_text(value: object) -> str:
    return read_text_as(value, "a string")


def integer(minimum: int, maximum: int | None = None) -> Reader:
    """A reader of whole numbers within bounds, from JSON numbers or numeric strings."""
    expected = (
        f"a whole number from {minimum} to {maximum}"
        if maximum is not None
        else f"a whole number >= {minimum}"
    )

    def read(value: object) -> int:
        number: int
        if isinstance(value, bool):  # JSON true is a Python int; it is never a count or a port
            raise Invalid(expected)
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            number = int(value)
        else:
            raise Invalid(expected)
        if number < minimum or (maximum is not None and number > maximum):
            raise Invalid(expected)
        return number

    return read


def decimal(minimum: float, maximum: float | None = None) -> Reader:
    """A reader of real numbers within bounds (``TaskRequestMaxCPU`` is a percentage)."""
    expected = (
        f"a number from {minimum:g} to {maximum:g}" if maximum is not None else f"a number >= {minimum:g}"
    )

    def read(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise Invalid(expected)
        try:
            number = float(value)
        except ValueError:
            raise Invalid(expected) from None
        if not math.isfinite(number) or number < minimum or (maximum is not None and number > maximum):
            raise Invalid(expected)
        return number

    return read


def read_bool(value: object) -> bool:
    # .NET's bool.ToString() writes "True"/"False"; JSON writes true/false. Both occur in SSIS files.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().casefold() in ("true", "false"):
        return value.strip().casefold() == "true"
    raise Invalid('true or false (JSON booleans or the strings "true"/"false")')


def read_duration(value: object) -> timedelta:
    expected = f"{TIMESPAN_FORM}, greater than zero"
    if not isinstance(value, str):
        raise Invalid(expected)
    try:
        duration = parse_timespan(value)
    except SettingsError:
        raise Invalid(expected) from None
    if duration <= timedelta(0):  # a zero or negative interval would make a heartbeat loop spin
        raise Invalid(expected)
    return duration


def write_duration(value: Any) -> object:
    return format_timespan(value)


def read_thumbprint(value: object) -> str:
    """A thumbprint as people paste it, or ``""`` for "not set yet"."""
    expected = 'a certificate thumbprint: 40 hex digits (spaces, colons and lowercase are fine) or ""'
    text = read_text_as(value, expected)
    if not text.strip():
        return ""
    problem = thumbprint_problem(text)
    if problem is not None:
        raise Invalid(f"{expected}; {problem}")
    return normalize_thumbprint(text)


def read_ip_address(value: object) -> str:
    """An IPv4 or IPv6 address to listen on (``127.0.0.1`` keeps a listener to this machine)."""
    expected = "an IP address such as 127.0.0.1 or 0.0.0.0"
    text = read_text_as(value, expected).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise Invalid(expected) from None


def read_https_endpoint(value: object) -> str:
    """``https://host:port`` as SSIS's MasterEndpoint, or ``""`` before init/join sets it.

    The port is required: a worker has no way to guess 8391 was changed, and SSIS's setup writes it.
    """
    expected = 'an https URL with host and port, like https://master.example.com:8391, or ""'
    text = read_text_as(value, expected).strip()
    if not text:
        return ""
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        raise Invalid(expected) from None
    if (
        parts.scheme.casefold() != "https"
        or not parts.hostname
        or not port
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise Invalid(expected)
    return f"https://{parts.netloc}"


def read_https_endpoints(value: object) -> str:
    """One or more ``https://host:port`` URLs, comma-separated, or ``""``: a node's masters in order.

    Several masters share one PostgreSQL catalog; a worker or manager given all their URLs fails over
    from one to the next. Each URL is checked as :func:`read_https_endpoint` checks one, duplicates
    are dropped (the first keeps its place), and the list is written back as ``a,b`` without spaces.
    """
    expected = (
        "an https URL with host and port, like https://m1.example.com:8391, or several separated by "
        'commas (https://m1.example.com:8391,https://m2.example.com:8391), or ""'
    )
    text = read_text_as(value, expected).strip()
    if not text:
        return ""
    urls: list[str] = []
    for part in text.split(","):
        if not part.strip():
            raise Invalid(f"{expected}; an empty entry between commas")
        try:
            urls.append(read_https_endpoint(part))
        except Invalid:
            raise Invalid(f"{expected}; {part.strip()!r} is not one") from None
    return ",".join(dict.fromkeys(urls))


def split_endpoints(value: str) -> list[str]:
    """The URLs of a ``MasterEndpoint`` value, in order (``[]`` for an empty value)."""
    return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]


def read_catalog_url(value: object) -> str:
    """A SQLAlchemy URL, or ``""`` for the default SQLite catalog in the home.

    SSIS's ``SqlServerName`` names a SQL Server instance (``HOST\\INSTANCE``); packfleet reads that key
    as an alias of ``CatalogUrl`` but needs a URL there, so an instance name is refused plainly.
    """
    expected = (
        "a SQLAlchemy URL like sqlite:////var/lib/packfleet/catalog.db"
        ' or postgresql+psycopg://user@host/db, or ""'
    )
    text = read_text_as(value, expected).strip()
    if text and not _URL_SCHEME.fullmatch(text):
        raise Invalid(expected)
    return text


def read_agent_id(value: object) -> str:
    """A worker's AgentId: a GUID (braces accepted, as .NET prints them), kept in canonical form."""
    expected = 'a GUID like 6f1c2a9e-8d1b-4c3e-9a57-0d2f4b6e8a10, or ""'
    text = read_text_as(value, expected).strip()
    if not text:
        return ""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise Invalid(expected) from None


def read_store_location(value: object) -> StoreLocation:
    expected = "LocalMachine or CurrentUser"
    text = read_text_as(value, expected)
    try:
        return StoreLocation.parse(text)
    except SettingsError:
        raise Invalid(expected) from None


def write_enum(value: Any) -> object:
    return str(value)


def choice(values: Collection[str]) -> Reader:
    """A reader of one of ``values``, case-insensitive, returning the canonical spelling."""
    expected = " or ".join(values)

    def read(value: object) -> str:
        text = read_text_as(value, expected).strip().casefold()
        for candidate in values:
            if candidate.casefold() == text:
                return candidate
        raise Invalid(expected)

    return read


def read_text_as(value: object, expected: str) -> str:
    if not isinstance(value, str):
        raise Invalid(expected)
    return value


def identity(value: Any) -> object:
    return value
