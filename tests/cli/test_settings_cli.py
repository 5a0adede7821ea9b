"""``packfleet settings show|set`` through the real entry point, on a temporary home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packfleet.cli import main
from packfleet.config import (
    MASTER_SETTINGS_FILE,
    WORKER_SETTINGS_FILE,
    Binding,
    MasterSettings,
    WorkerSettings,
    add_binding,
    load_master_settings,
    load_worker_settings,
    save_master_settings,
    save_worker_settings,
)

THUMB = "A94B0C12EF" + "00" * 15
AGENT = "6f1c2a9e-8d1b-4c3e-9a57-0d2f4b6e8a10"


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_show_master_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_master_settings(tmp_path, MasterSettings(port_number=9443, ssl_cert_thumbprint=THUMB))
    code, out, _ = run(capsys, tmp_path, "settings", "show", "master", "--json")
    assert code == 0
    document = json.loads(out)
    assert document["file"] == str(tmp_path / MASTER_SETTINGS_FILE)
    assert document["kind"] == "master"
    assert list(document["settings"])[:2] == ["PortNumber", "SSLCertThumbprint"]
    assert document["settings"]["PortNumber"] == 9443
    assert document["settings"]["SSLCertThumbprint"] == THUMB


def test_show_worker_for_people(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table folds long values on narrow terminals
    save_worker_settings(tmp_path, WorkerSettings(display_name="etl-01", agent_id=AGENT))
    code, out, _ = run(capsys, tmp_path, "settings", "show", "WORKER")
    assert code == 0
    assert WORKER_SETTINGS_FILE in out
    for line in ("LeaseInterval", "00:01:00", "etl-01", AGENT, "ExecutionLogRetryTimeout", "7.00:00:00"):
        assert line in out


def test_show_without_file_says_to_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, tmp_path, "settings", "show", "worker")
    assert code == 3
    assert out == ""
    assert "does not exist" in err
    assert "fix: packfleet worker init --master URL" in err


def test_show_reports_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / MASTER_SETTINGS_FILE).write_text('{"PortNumbr": 1}')
    code, _, err = run(capsys, tmp_path, "settings", "show", "master")
    assert code == 3
    assert "unknown key 'PortNumbr'; did you mean 'PortNumber'?" in err


def test_set_prints_old_and_new(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_master_settings(tmp_path, MasterSettings())
    code, out, err = run(capsys, tmp_path, "settings", "set", "master", "SSLCertThumbprint", THUMB.lower())
    assert code == 0
    assert out.strip() == f'{MASTER_SETTINGS_FILE}: SSLCertThumbprint "" -> {THUMB}'
    assert "the master reads it at start and on reload" in err
    assert load_master_settings(tmp_path).ssl_cert_thumbprint == THUMB


def test_set_as_json_with_an_old_spelling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_worker_settings(tmp_path, WorkerSettings(agent_id=AGENT))
    code, out, err = run(
        capsys, tmp_path, "settings", "set", "worker", "LeaseInternval", "00:02:30", "--json"
    )
    assert code == 0
    assert json.loads(out) == {
        "file": str(tmp_path / WORKER_SETTINGS_FILE),
        "kind": "worker",
        "key": "LeaseInterval",
        "old": "00:01:00",
        "new": "00:02:30",
    }
    assert "'LeaseInternval' was saved as 'LeaseInterval'" in err
    assert load_worker_settings(tmp_path).lease_interval.total_seconds() == 150


def test_set_unknown_key_suggests_the_closest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_worker_settings(tmp_path, WorkerSettings(agent_id=AGENT))
    before = (tmp_path / WORKER_SETTINGS_FILE).read_bytes()
    code, out, err = run(
        capsys, tmp_path, "settings", "set", "worker", "LeaseIntervall", "00:01:00", "--json"
    )
    assert code == 3
    assert out == ""
    doc = json.loads(err)  # with --json the error is one JSON document on stderr
    assert (
        "WorkerSettings.config: unknown key 'LeaseIntervall'; did you mean 'LeaseInterval'?" in doc["error"]
    )
    assert doc["fix"] == "packfleet settings show worker" and doc["type"] == "SettingsError"
    assert (tmp_path / WORKER_SETTINGS_FILE).read_bytes() == before


def test_set_bad_value_names_the_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_worker_settings(tmp_path, WorkerSettings(agent_id=AGENT))
    before = (tmp_path / WORKER_SETTINGS_FILE).read_bytes()
    code, _, err = run(capsys, tmp_path, "settings", "set", "worker", "AgentHeartbeatInterval", "1m")
    assert code == 3
    assert 'AgentHeartbeatInterval = "1m" is not valid; expected a .NET TimeSpan like 00:01:00' in err
    assert (tmp_path / WORKER_SETTINGS_FILE).read_bytes() == before


def test_set_negative_value_after_double_dash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_worker_settings(tmp_path, WorkerSettings(agent_id=AGENT))
    code, _, err = run(capsys, tmp_path, "settings", "set", "worker", "--", "LeaseInterval", "-00:01:00")
    assert code == 3
    assert "greater than zero" in err


def test_set_master_without_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, tmp_path, "settings", "set", "master", "PortNumber", "8391")
    assert code == 3
    assert "fix: packfleet master init" in err
    assert not (tmp_path / MASTER_SETTINGS_FILE).exists()


def test_set_manager_creates_its_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, tmp_path, "settings", "set", "manager", "MasterEndpoint", "https://127.0.0.1:8391/", "--json"
    )
    assert code == 0
    assert json.loads(out)["new"] == "https://127.0.0.1:8391"
    code, out, _ = run(capsys, tmp_path, "settings", "show", "manager", "--json")
    assert json.loads(out)["settings"]["MasterEndpoint"] == "https://127.0.0.1:8391"


def test_set_thumbprint_that_disagrees_with_the_binding_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_master_settings(tmp_path, MasterSettings(ssl_cert_thumbprint=THUMB))
    add_binding(tmp_path, Binding("0.0.0.0:8391", THUMB, "Root", "4dc3e181-e14b-4a21-b022-59fc669b0914"))
    code, _, err = run(capsys, tmp_path, "settings", "set", "master", "SSLCertThumbprint", "B" * 40)
    assert code == 0
    assert f"the binding on 0.0.0.0:8391 serves certificate {THUMB}" in err
    assert "refuses to start" in err
    code, _, err = run(capsys, tmp_path, "settings", "set", "master", "SSLCertThumbprint", THUMB)
    assert code == 0
    assert "refuses to start" not in err


def test_set_port_without_a_binding_says_how_to_add_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_master_settings(tmp_path, MasterSettings(ssl_cert_thumbprint=THUMB))
    code, _, err = run(capsys, tmp_path, "settings", "set", "master", "PortNumber", "9443")
    assert code == 0
    assert f"packfleet binding add --port 9443 --certhash {THUMB} --store Root" in err


def test_unknown_kind_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, tmp_path, "settings", "show", "catalog")
    assert code == 2
    assert "catalog" in err


@pytest.mark.parametrize(
    ("command", "teaches"),
    [
        ("show", "packfleet --home /srv/w settings show worker"),
        ("set", "packfleet --home /srv/m settings set master SSLCertThumbprint"),
    ],
)
def test_help_has_an_example(capsys: pytest.CaptureFixture[str], command: str, teaches: str) -> None:
    assert main(["settings", command, "--help"]) == 0
    out = capsys.readouterr().out
    assert teaches in out
    assert "WorkerSettings.config" in out or "SSLCertThumbprint" in out
