"""Does a certificate name a host? The one rule, so that every check agrees with the TLS handshake."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _as_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def is_ip_address(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 literal, brackets allowed (``[::1]`` as in a URL).

    A client sends SNI only for names, never for IP literals (RFC 6066 §3), and OpenSSL checks an IP
    host against the certificate's iPAddress entries only.
    """
    return _as_ip(text) is not None


def _hostname(text: str) -> str:
    # DNS names compare without case (RFC 4343); "localhost." is the same name, fully qualified.
    return text.rstrip(".").casefold()


def _host_in(host: str, names: Iterable[str]) -> bool:
    """Whether ``host`` is among ``names``: IPs as addresses (``::1`` = ``0::1``), names without case."""
    address = _as_ip(host)
    if address is None:
        wanted = _hostname(host)
        return any(_as_ip(name) is None and _hostname(name) == wanted for name in names)
    return any(_as_ip(name) == address for name in names)


def certificate_names_host(
    host: str, *, san_dns: Sequence[str], san_ip: Sequence[str], subject_cns: Sequence[str]
) -> bool:
    """Whether a TLS client connecting to ``host`` accepts a certificate with these names.

    This is OpenSSL's ``X509_check_host``/``X509_check_ip`` as Python's ``ssl`` calls them: an IP
    host matches iPAddress SAN entries only; a host name matches the dNSName SAN entries (RFC 6125
    §6.4), and the subject CNs only when the certificate has no dNSName at all
    (``hostname_checks_common_name``, on by default), as in an imported ``MakeCert -n "CN=host"``
    certificate without a SAN. :func:`packfleet.pki.create_self_signed` copies each CN into the SAN.
    """
    if is_ip_address(host):
        return _host_in(host, san_ip)
    return _host_in(host, san_dns if san_dns else subject_cns)
