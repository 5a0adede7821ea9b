"""The console's listener: server-only TLS with the master certificate or its own, swapped without a
restart; its settings keys; and `packfleet manager user` on the master machine."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from master.support import MasterHome, build_master_home
from packfleet.cli import main
from packfleet.config import load_master_settings, save_master_settings
from packfleet.console import verify_password
from packfleet.pki import CertStore, create_self_signed

from .conftest import RunningMaster


def served_thumbprint(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only reading which certificate is served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - the thumbprint is SHA-1 by definition


def test_the_console_serves_the_master_certificate_and_asks_for_no_client_certificate(
    master: RunningMaster,
) -> None:
    assert served_thumbprint(master.port) == master.mh.master.thumbprint
    handshake = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{master.port}", "-brief"],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    out = (handshake.stdout + handshake.stderr).decode()
    assert "CONNECTION ESTABLISHED" in out, out
    assert "Protocol version: TLSv1.3" in out

    # The master's own listener asks for client certificates (CERT_OPTIONAL); the console never does.
    def ca_names(port: int) -> str:
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"],
            input=b"",
            capture_output=True,
            timeout=30,
            check=False,
        ).stdout.decode()

    # s_client prints the signature algorithms of a CertificateRequest only when one came.
    assert "Requested Signature Algorithms" in ca_names(master.server.port)
    assert "Requested Signature Algorithms" not in ca_names(master.port)


def test_a_console_certificate_of_its_own_is_swapped_in_on_reload(master: RunningMaster) -> None:
    home = master.mh.home
    own = create_self_signed(["127.0.0.1", "console.example"])
    CertStore(home, "My").add(own)
    settings = load_master_settings(home)
    save_master_settings(home, dataclasses.replace(settings, console_cert_thumbprint=own.thumbprint))
    master.run(master.server.reload())
    assert served_thumbprint(master.port) == own.thumbprint
    # A certificate without its key cannot be served: the reload keeps the last good one.
    keyless = create_self_signed(["127.0.0.1"])
    CertStore(home, "Root").add(type(keyless)(keyless.certificate))
    save_master_settings(home, dataclasses.replace(settings, console_cert_thumbprint=keyless.thumbprint))
    master.run(master.server.reload())
    assert served_thumbprint(master.port) == own.thumbprint
    # The worker listener swapped nothing and still serves the master certificate.
    assert served_thumbprint(master.server.port) == master.mh.master.thumbprint


# These run the master on a thread of its own, like every console test: Playwright's sync API keeps
# an event loop running in the main thread for the whole session once a browser test has started.


def test_console_enabled_false_starts_no_console(tmp_path: Path) -> None:
    mh: MasterHome = build_master_home(tmp_path)
    settings = load_master_settings(mh.home)
    save_master_settings(mh.home, dataclasses.replace(settings, console_enabled=False))
    running = RunningMaster(mh)
    running.start()
    try:
        assert running.server.console_url is None
    finally:
        running.stop()


def test_a_console_port_in_use_leaves_the_master_serving(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        running = RunningMaster(build_master_home(tmp_path), console_port=taken.getsockname()[1])
        running.start()
        try:
            assert running.server.console_url is None
            assert served_thumbprint(running.server.port) == running.mh.master.thumbprint
        finally:
            running.stop()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("ConsoleAddress", "localhost", "an IP address such as 127.0.0.1"),
        ("ConsolePort", "70000", "ConsolePort"),
        ("ConsoleEnabled", "maybe", "true or false"),
        ("ConsoleCertThumbprint", "XYZ", "thumbprint"),
    ],
)
def test_console_settings_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, expected: str
) -> None:
    mh = build_master_home(tmp_path)
    code = main(["--home", str(mh.home), "settings", "set", "master", key, value])
    _, err = capsys.readouterr()
    assert code != 0 and key in err and expected in err, err


def _cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, home: Path, stdin: str, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["--home", str(home), "manager", "user", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_manager_user_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = build_master_home(tmp_path).home
    code, _, err = _cli(capsys, monkeypatch, home, "", "add", "alice", "--role", "operator")
    assert code != 0 and "--password-stdin" in err, "a password is never taken from an argument"
    code, _, err = _cli(
        capsys, monkeypatch, home, "short\n", "add", "alice", "--role", "operator", "--password-stdin"
    )
    assert code != 0 and "at least 12" in err
    code, out, _ = _cli(
        capsys,
        monkeypatch,
        home,
        "correct horse battery\n",
        "add",
        "alice",
        "--role",
        "operator",
        "--password-stdin",
        "--json",
    )
    assert code == 0 and json.loads(out)["role"] == "operator"
    assert "password" not in out
    code, _, err = _cli(
        capsys, monkeypatch, home, "another long one!", "add", "alice", "--role", "viewer", "--password-stdin"
    )
    assert code != 0 and "already exists" in err and "packfleet manager user passwd alice" in err
    code, _, err = _cli(capsys, monkeypatch, home, "", "add", "bob", "--role", "root", "--password-stdin")
    assert code != 0 and "root" in err
    code, out, _ = _cli(capsys, monkeypatch, home, "", "list", "--json")
    assert [(u["name"], u["role"]) for u in json.loads(out)] == [("alice", "operator")]
    code, out, _ = _cli(
        capsys,
        monkeypatch,
        home,
        "a new password 2\n",
        "passwd",
        "alice",
        "--role",
        "admin",
        "--password-stdin",
        "--json",
    )
    assert code == 0 and json.loads(out)["role"] == "admin"

    from packfleet.catalog import Catalog

    catalog = Catalog.open(load_master_settings(home).resolved_catalog_url(home))
    try:
        stored = catalog.get_user("alice").password_hash
        assert stored.startswith("$argon2id$")
        assert verify_password(stored, "a new password 2") and not verify_password(
            stored, "correct horse battery"
        )
        assert [a.action for a in catalog.list_audit(action="user")] == ["user.add", "user.passwd"]
    finally:
        catalog.close()
    code, _, _ = _cli(capsys, monkeypatch, home, "", "delete", "alice")
    assert code == 0
    code, _, err = _cli(capsys, monkeypatch, home, "", "delete", "alice")
    assert code != 0 and "no console user 'alice'" in err and "packfleet manager user list" in err
