"""Hiding the database password that ``CatalogUrl`` may carry whenever a setting is shown.

A PostgreSQL catalog URL is usually ``postgresql+psycopg://packfleet:s3cret@db:5432/catalog``: the
password sits in MasterSettings.config (mode 0600 for that reason) and must not reach a terminal, a
log or an error message. SQLAlchemy's ``URL.render_as_string(hide_password=True)`` does this for a
URL it could parse; this module also covers the text it cannot parse (an error about a malformed URL
is exactly when the text gets echoed) and stays a standard-library leaf, as :mod:`packfleet.config` is.
"""

from __future__ import annotations

import re

#: What replaces a password; the same marker SQLAlchemy's ``hide_password`` prints.
HIDDEN = "***"

#: Settings whose value may hold a credential (``SqlServerName`` is SSIS's name for ``CatalogUrl``).
SECRET_KEYS = frozenset({"CatalogUrl", "SqlServerName"})

# libpq also takes the password as a query parameter (postgresql://db/catalog?password=s3cret).
_QUERY_PASSWORD = re.compile(r"(?i)([?&;]password=)[^&;#]*")


def mask_url_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part (and any ``password=``) hidden.

    The user info is taken up to the *last* ``@`` and from the first ``:``, so a password holding an
    unescaped ``@``, ``/`` or ``:`` is hidden whole; a URL without a password is returned unchanged.

    >>> mask_url_password("postgresql+psycopg://packfleet:s3cret@db:5432/catalog")
    'postgresql+psycopg://packfleet:***@db:5432/catalog'
    >>> mask_url_password("packfleet:p@ss/w:rd@db/catalog")
    'packfleet:***@db/catalog'
    >>> mask_url_password("sqlite:////var/lib/packfleet/catalog.db")
    'sqlite:////var/lib/packfleet/catalog.db'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    query_at = rest.find("?")
    head, query = (rest, "") if query_at < 0 else (rest[:query_at], rest[query_at:])
    userinfo, at, host = head.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        if colon:
            head = f"{user}:{HIDDEN}@{host}"
    masked = head + _QUERY_PASSWORD.sub(rf"\g<1>{HIDDEN}", query)
    return f"{scheme}://{masked}" if sep else masked


def redact_setting(key: str, value: object) -> object:
    """``value`` as it may be shown for setting ``key``: a catalog URL's password hidden.

    >>> redact_setting("CatalogUrl", "postgresql://u:pw@db/c")
    'postgresql://u:***@db/c'
    >>> redact_setting("PortNumber", 8391)
    8391
    """
    if key in SECRET_KEYS and isinstance(value, str):
        return mask_url_password(value)
    return value
