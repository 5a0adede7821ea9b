from __future__ import annotations

import ipaddress
import socket

import pytest

from packfleet.errors import PkiError
from packfleet.pki import local_ips, machine_names, parse_names


@pytest.mark.parametrize(
    "text",
    [
        "CN=a;CN=b",
        "a;b",
        "CN=a, CN=b",
        "  cn = a ;; CN=b ; ",
        "CN=a;CN=A;b;CN=B",
    ],
)
def test_parse_names_reads_makecert_spellings(text: str) -> None:
    assert parse_names(text) == ["a", "b"]


def test_parse_names_keeps_order_and_ip_addresses() -> None:
    assert parse_names("CN=worker1;CN=10.0.0.7;CN=::1") == ["worker1", "10.0.0.7", "::1"]


@pytest.mark.parametrize("text", ["", "  ", ";", "CN=", "CN= ; ,"])
def test_parse_names_refuses_no_name(text: str) -> None:
    with pytest.raises(PkiError, match="names no CN") as info:
        parse_names(text)
    assert info.value.fix is not None and "CN=" in info.value.fix


def test_parse_names_refuses_other_attributes() -> None:
    with pytest.raises(PkiError, match="'O=Contoso' .* is not a CN"):
        parse_names("CN=a, O=Contoso")


def test_local_ips_are_ipv4_with_loopback_last() -> None:
    ips = [ipaddress.IPv4Address(ip) for ip in local_ips()]
    assert ipaddress.IPv4Address("127.0.0.1") in ips
    loopback = [ip.is_loopback for ip in ips]
    assert loopback == sorted(loopback), "loopback addresses must come last"
    assert len(ips) == len(set(ips))


def test_machine_names_are_host_name_then_routable_ips() -> None:
    names = machine_names()
    assert names[0] == socket.gethostname()
    assert names[1:] == [ip for ip in local_ips() if not ipaddress.IPv4Address(ip).is_loopback]
