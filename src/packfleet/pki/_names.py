"""Certificate names: MakeCert's ``-n`` syntax, SAN entries, and this machine's own names."""

from __future__ import annotations

import ipaddress
import re
import socket

import psutil

from packfleet.errors import PkiError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 5280 appendix A: ub-common-name INTEGER ::= 64.
MAX_CN_LENGTH = 64

# RFC 1123 labels (letters, digits, hyphens, not at the ends); a leading "*." wildcard and "_" (seen
# in real service names, and accepted by OpenSSL's host check) are allowed as well.
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*\.?")


def parse_names(text: str) -> list[str]:
    """Split a MakeCert ``-n`` value into names.

    MakeCert takes ``-n "CN=worker1;CN=10.0.0.7"`` for a certificate with two CNs. People also write
    ``worker1;10.0.0.7`` or ``CN=worker1, CN=10.0.0.7``; all give ``["worker1", "10.0.0.7"]``.
    Duplicates (compared case-insensitively, as DNS does) are dropped, first spelling kept.
    Other attributes (``O=``, ``OU=``...) are refused: packfleet certificates are named by CNs only.
    """
    names: list[str] = []
    seen: set[str] = set()
    for part in re.split(r"[;,]", text):
        item = part.strip()
        if not item:
            continue
        if "=" in item:
            attribute, _, value = item.partition("=")
            if attribute.strip().upper() != "CN":
                raise PkiError(
                    f"{item!r} in {text!r} is not a CN: packfleet certificates are named by CNs only",
                    fix='name hosts and IPs as CNs: -n "CN=host;CN=10.0.0.7"',
                )
            item = value.strip()
            if not item:
                continue
        if item.casefold() not in seen:
            seen.add(item.casefold())
            names.append(item)
    if not names:
        raise PkiError(
            f"{text!r} names no CN",
            fix='give at least one name: -n "CN=host;CN=10.0.0.7"',
        )
    return names


def classify_name(name: str) -> IPAddress | str:
    """Return the SAN entry for ``name``: an IP address if it parses as one, else an ASCII DNS name.

    Hostnames with non-ASCII letters are stored in their IDNA form (``xn--...``), the only form a
    dNSName may hold (RFC 5280 §4.2.1.6).
    """
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise PkiError(
            f"{name!r} is neither an IP address nor a valid DNS name ({exc})",
            fix='use host names and IP addresses: -n "CN=host.example.com;CN=10.0.0.7"',
        ) from exc
    if len(name) > MAX_CN_LENGTH or not _DNS_NAME.fullmatch(ascii_name):
        raise PkiError(
            f"{name!r} is neither an IP address nor a valid DNS name of at most "
            f"{MAX_CN_LENGTH} characters (letters, digits, '-', '.', a leading '*.')",
            fix='use host names and IP addresses: -n "CN=host.example.com;CN=10.0.0.7"',
        )
    return ascii_name


def local_ips() -> list[str]:
    """This machine's IPv4 addresses, loopback last (the seed puts the master's IP in its cert)."""
    found: list[ipaddress.IPv4Address] = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family != socket.AF_INET:
                continue
            ip = ipaddress.IPv4Address(address.address)
            if ip not in found:
                found.append(ip)
    ordered = [ip for ip in found if not ip.is_loopback] + [ip for ip in found if ip.is_loopback]
    return [str(ip) for ip in ordered]


def machine_names() -> list[str]:
    """The seed's default master CNs: the computer name and its (non-loopback) IP addresses."""
    names = [socket.gethostname()]
    names += [ip for ip in local_ips() if not ipaddress.IPv4Address(ip).is_loopback]
    return list(dict.fromkeys(names))
