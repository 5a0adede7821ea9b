"""``packfleet binding show|add|delete`` (netsh http ... sslcert) with real certificates in real stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packfleet import trust
from packfleet.cli import main
from packfleet.config import (
    BINDINGS_FILE,
    MasterSettings,
    load_bindings,
    load_master_settings,
    save_master_settings,
)
from packfleet.pki import CertStore, Credential, create_self_signed

APPID = "{4dc3e181-e14b-4a21-b022-59fc669b0914}"


def add(cred: Credential, *extra: str, store: str = "Root") -> tuple[str, ...]:
    """Arguments of ``binding add`` on port 8391 for ``cred``, as the seed's netsh line."""
    return ("binding", "add", "--port", "8391", "--certhash", cred.thumbprint, "--store", store, *extra)


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def master_cred() -> Credential:
    return create_self_signed(["127.0.0.1"])


@pytest.fixture
def home(tmp_path: Path, master_cred: Credential) -> Path:
    CertStore(tmp_path, "Root").add(master_cred)  # MakeCert ... -ss Root keeps the key in Root
    return tmp_path


def test_add_then_show_as_json(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    thumb = master_cred.thumbprint
    typed = ("--certhash", thumb.lower(), "--store", "root", "--appid", APPID.strip("{}").upper())
    code, out, _ = run(capsys, home, "binding", "add", "--port", "8391", *typed, "--json")
    assert code == 0
    expected = {"ipport": "0.0.0.0:8391", "certhash": thumb, "certstorename": "Root", "appid": APPID}
    assert json.loads(out) == expected
    code, out, _ = run(capsys, home, "binding", "show", "--port", "8391", "--json")
    assert code == 0
    assert json.loads(out) == expected
    assert json.loads((home / BINDINGS_FILE).read_text()) == [expected]


def test_show_for_people_looks_like_netsh(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, home, *add(master_cred))
    code, out, _ = run(capsys, home, "binding", "show", "--port", "8391")
    assert code == 0
    assert "    IP:port                      : 0.0.0.0:8391" in out
    assert f"    Certificate Hash             : {master_cred.thumbprint}" in out
    assert "    Certificate Store Name       : Root" in out
    assert "    Application ID               : {" in out


def test_default_appid_is_a_new_guid(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, home, *add(master_cred, "--json"))
    assert code == 0
    appid = json.loads(out)["appid"]
    assert appid.startswith("{") and appid.endswith("}") and len(appid) == 38


def test_show_without_port_lists_every_binding(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, home, "binding", "show", "--json")
    assert (code, json.loads(out)) == (0, [])
    for ip in ("0.0.0.0", "::"):
        args = ("binding", "add", "--ip", ip, "--port", "8391", "--certhash", master_cred.thumbprint)
        assert run(capsys, home, *args, "--store", "Root")[0] == 0
    code, out, _ = run(capsys, home, "binding", "show", "--json")
    assert [b["ipport"] for b in json.loads(out)] == ["0.0.0.0:8391", "[::]:8391"]
    code, out, _ = run(capsys, home, "binding", "show")
    assert str(home / BINDINGS_FILE) in out
    assert out.count("Certificate Hash") == 2


def test_show_missing_binding_is_an_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, home, "binding", "show", "--port", "8391", "--json")
    assert code == 3
    assert out == ""
    doc = json.loads(err)  # with --json the error is one JSON document on stderr
    assert doc["error"].startswith("no binding for 0.0.0.0:8391") and doc["exit_code"] == 3
    assert doc["fix"].startswith("packfleet binding add --ip 0.0.0.0 --port 8391")


def test_add_on_a_bound_port_says_delete_first(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, home, *add(master_cred))[0] == 0
    code, _, err = run(capsys, home, *add(master_cred))
    assert code == 3
    assert "is already bound" in err and "delete it first" in err
    assert "fix: packfleet binding delete --ip 0.0.0.0 --port 8391" in err


def test_add_needs_the_certificate_in_that_store(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, home, *add(master_cred, store="My"))
    assert code == 4
    assert f"no certificate {master_cred.thumbprint} in store My" in err
    assert load_bindings(home) == []


def test_add_needs_the_private_key(
    tmp_path: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    CertStore(tmp_path, "Root").add(Credential(master_cred.certificate))  # the public .cer only
    code, _, err = run(capsys, tmp_path, *add(master_cred))
    assert code == 4
    assert "without its private key" in err
    assert load_bindings(tmp_path) == []


def test_add_refuses_a_malformed_thumbprint(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, home, "binding", "add", "--port", "8391", "--certhash", "A94B", "--store", "Root"
    )
    assert code == 4
    assert "is not a valid certhash" in err


def test_add_refuses_a_bad_appid(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, home, *add(master_cred, "--appid", "ssis"))
    assert code == 3
    assert "'ssis' is not an appid" in err


def test_add_reminds_to_update_the_master_settings(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    save_master_settings(home, MasterSettings(ssl_cert_thumbprint="B" * 40))
    code, _, err = run(capsys, home, *add(master_cred))
    assert code == 0
    assert f"packfleet settings set master SSLCertThumbprint {master_cred.thumbprint}" in err
    # The note is the binding rule's first error, as doctor lists it and the master's start raises it.
    [rule] = trust.errors(trust.binding_rule(home, load_master_settings(home)))
    assert f"note: {rule.message}\n  fix: {rule.fix}\n" in err


def test_delete_prints_the_binding_and_how_to_keep_its_appid(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, home, *add(master_cred, "--appid", APPID))[0] == 0
    code, out, err = run(capsys, home, "binding", "delete", "--port", "8391", "--json")
    assert code == 0
    assert json.loads(out)["appid"] == APPID
    assert f"--appid {APPID}" in err
    assert load_bindings(home) == []
    code, _, err = run(capsys, home, "binding", "delete", "--port", "8391")
    assert code == 3
    assert "no binding for 0.0.0.0:8391" in err


def test_port_out_of_range_is_a_usage_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, home, "binding", "show", "--port", "70000")
    assert code == 2
    assert "70000" in err


def test_bad_ip_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, home, "binding", "show", "--ip", "localhost", "--port", "8391")
    assert code == 3
    assert "is not an ipport" in err


@pytest.mark.parametrize(
    ("command", "netsh"),
    [
        ("show", "netsh http show sslcert ipport=0.0.0.0:8391"),
        ("add", "netsh http add sslcert ipport=0.0.0.0:8391"),
        ("delete", "netsh http delete sslcert ipport=0.0.0.0:8391"),
    ],
)
def test_help_names_the_netsh_command_and_an_example(
    capsys: pytest.CaptureFixture[str], command: str, netsh: str
) -> None:
    assert main(["binding", command, "--help"]) == 0
    out = capsys.readouterr().out
    assert netsh in out
    assert f"packfleet --home /srv/m binding {command} --port 8391" in out


def test_people_see_an_empty_table_and_a_deletion(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, home, "binding", "show")
    assert code == 0
    assert "(none)" in out
    assert run(capsys, home, *add(master_cred))[0] == 0
    code, out, _ = run(capsys, home, "binding", "delete", "--port", "8391")
    assert code == 0
    assert "SSL Certificate successfully deleted" in out
    assert f"Certificate Hash             : {master_cred.thumbprint}" in out


def test_a_broken_master_settings_file_does_not_hide_the_binding_result(
    home: Path, master_cred: Credential, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "MasterSettings.config").write_text("{")
    code, out, err = run(capsys, home, *add(master_cred, "--json"))
    assert code == 0
    assert json.loads(out)["certhash"] == master_cred.thumbprint
    assert err == ""
