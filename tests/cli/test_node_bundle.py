"""``master export-node`` and ``master init --from-node``: a further master on the same PostgreSQL catalog."""

from __future__ import annotations

import io
import json
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from packfleet.cli import main
from packfleet.config import get_binding, load_manager_settings, load_master_settings, set_setting
from packfleet.errors import UsageError
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.provision import export_node, init_master_from_node, uncovered_names

PASSWORD = "correct horse battery"

pytestmark = pytest.mark.postgres


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run(home, *args, stdin="")``: packfleet's exit code, stdout and stderr."""

    def call(home: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(["--home", str(home), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def first(tmp_path: Path, pg_url: str, run: Run) -> Path:
    home = tmp_path / "m1"
    code, _out, err = run(
        home, "master", "init", "--cn", "127.0.0.1", "--cn", "127.0.0.5", "--catalog", pg_url
    )
    assert code == 0, err
    set_setting(home, "master", "RetentionWindowInDays", "30")
    (home / "secrets.key").write_bytes(b"k" * 32)
    (home / "secrets.key").chmod(0o600)
    worker = create_self_signed(["worker1"])
    CertStore(home, "Root").add(Credential(worker.certificate))  # a worker the first master trusts
    return home


def test_a_second_master_gets_the_certificate_trust_settings_and_secrets_of_the_first(
    first: Path,
    tmp_path: Path,
    pg_url: str,
    run: Run,
) -> None:
    bundle = tmp_path / "node.bundle"
    code, out, err = run(
        first, "master", "export-node", "--out", str(bundle), "--password-stdin", "--json",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    exported = json.loads(out)
    assert exported["files"] == ["secrets.key"] and "CatalogUrl" in exported["settings"]
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    data = bundle.read_bytes()
    assert b"PRIVATE KEY" not in data and b"BEGIN CERTIFICATE" not in data and b"kkkk" not in data

    second = tmp_path / "m2"
    code, out, err = run(
        second, "master", "init", "--from-node", str(bundle), "--password-stdin",
        "--catalog", pg_url, "--port", "9443", "--cn", "127.0.0.5", "--json", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    made = json.loads(out)
    one, two = load_master_settings(first), load_master_settings(second)
    assert two.ssl_cert_thumbprint == one.ssl_cert_thumbprint == made["thumbprint"]
    assert CertStore(second, "Root").get(two.ssl_cert_thumbprint).private_key is not None
    assert set(CertStore(first, "Root").thumbprints()) <= set(CertStore(second, "Root").thumbprints())
    assert (two.catalog_url, two.retention_window_days) == (pg_url, 30)
    assert (two.port_number, two.master_address) == (9443, "https://127.0.0.5:9443")
    binding = get_binding(second, "0.0.0.0:9443")
    assert binding is not None and binding.certhash == one.ssl_cert_thumbprint
    assert (second / "secrets.key").read_bytes() == b"k" * 32
    assert stat.S_IMODE((second / "secrets.key").stat().st_mode) == 0o600
    admin = load_manager_settings(first).admin_cert_thumbprint
    assert load_manager_settings(second).admin_cert_thumbprint == admin
    assert "127.0.0.5" not in made["uncovered_names"]


def test_a_wrong_password_or_a_changed_byte_is_refused(
    first: Path, tmp_path: Path, pg_url: str, run: Run
) -> None:
    bundle = tmp_path / "node.bundle"
    code, _out, err = run(
        first, "master", "export-node", "--out", str(bundle), "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    code, _out, err = run(
        tmp_path / "m2", "master", "init", "--from-node", str(bundle), "--password-stdin",
        "--catalog", pg_url, stdin="not the password\n",
    )  # fmt: skip
    assert code != 0 and "password is wrong" in err
    assert not (tmp_path / "m2" / "MasterSettings.config").exists()
    envelope = json.loads(bundle.read_text())
    envelope["n"] = 2**14  # the header is bound to the ciphertext
    bundle.write_text(json.dumps(envelope))
    code, _out, err = run(
        tmp_path / "m2", "master", "init", "--from-node", str(bundle), "--password-stdin",
        "--catalog", pg_url, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code != 0 and "scrypt" in err


def test_a_short_password_is_refused_before_anything_is_written(
    first: Path, tmp_path: Path, run: Run
) -> None:
    bundle = tmp_path / "node.bundle"
    code, _out, err = run(
        first, "master", "export-node", "--out", str(bundle), "--password-stdin", stdin="short\n"
    )
    assert code != 0 and "at least 8" in err
    assert not bundle.exists()


def test_sqlite_catalogs_cannot_be_shared_and_the_refusal_says_why(
    tmp_path: Path, pg_url: str, run: Run
) -> None:
    lone = tmp_path / "lone"
    code, _out, err = run(lone, "master", "init", "--cn", "127.0.0.1")
    assert code == 0, err
    bundle = tmp_path / "sqlite.bundle"
    code, _out, err = run(
        lone, "master", "export-node", "--out", str(bundle), "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    code, _out, err = run(
        tmp_path / "m2", "master", "init", "--from-node", str(bundle), "--password-stdin",
        "--catalog", pg_url, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code != 0 and "SQLite" in err and "cannot be shared" in err and "PostgreSQL" in err
    code, _out, err = run(
        tmp_path / "m3", "master", "init", "--from-node", str(bundle), "--password-stdin",
        "--catalog", f"sqlite:///{tmp_path}/c.db", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code != 0 and "is not PostgreSQL" in err
    code, _out, err = run(
        tmp_path / "m4", "master", "init", "--from-node", str(bundle), "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code != 0 and "needs --catalog" in err


def test_another_database_is_refused(first: Path, tmp_path: Path, pg_url: str) -> None:
    bundle = export_node(first, tmp_path / "b", PASSWORD).path
    other = pg_url.rsplit("/", 1)[0] + "/some_other_db"
    with pytest.raises(UsageError, match="same database"):
        init_master_from_node(tmp_path / "m2", bundle, PASSWORD, catalog_url=other)


def test_master_init_names_this_hosts_names_the_certificate_does_not_cover(tmp_path: Path, run: Run) -> None:
    code, out, err = run(tmp_path / "m", "master", "init", "--cn", "127.0.0.1", "--json")
    assert code == 0, err
    assert socket.gethostname() in json.loads(out)["uncovered_names"]
    assert "127.0.0.1" not in json.loads(out)["uncovered_names"]
    cert = create_self_signed(["127.0.0.1", "localhost"]).info("Root")
    assert uncovered_names(cert, ["localhost", "127.0.0.5", "127.0.0.1", "LOCALHOST"]) == ["127.0.0.5"]
