"""PROCEDURES.md, step by step through the CLI, checking files, stores and settings after each step.

These are the seed's two manual procedures — "change the master certificate" and "change the worker
certificate" — done exactly as an administrator following the page would, with packfleet's
equivalents of MakeCert, netsh, certmgr and winhttpcertcfg. (Restarting the services and the
connection over TLS are covered by the end-to-end tests, and so is the one confirmation "change the
worker certificate" now ends with: the master refuses to bind a certificate to an existing AgentId
by itself, so the administrator runs `packfleet manager worker connect REF --cert THUMBPRINT`;
see tests/e2e/test_doctor.py.)
"""

from __future__ import annotations

import json
import os
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest

from packfleet.cli import main
from packfleet.config import get_binding, load_master_settings, load_worker_settings
from packfleet.pki import CertStore

#: master home, worker home, and what `master init` and `worker init` printed.
Nodes = tuple[Path, Path, dict[str, Any], dict[str, Any]]


def cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> Any:  # the command's JSON output
    code = main(["--home", str(home), *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, f"packfleet {' '.join(args)} exited {code}: {err}"
    return json.loads(out) if out.strip() else ""


@pytest.fixture
def nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Nodes:
    master, worker = tmp_path / "master", tmp_path / "worker"
    m = cli(capsys, master, "master", "init", "--cn", "127.0.0.1", "--port", "8391")
    w = cli(
        capsys, worker, "worker", "init", "--master", "https://127.0.0.1:8391",
        "--master-cert", str(master / "master.cer"), "--name", "worker1", "--ip", "127.0.0.2",
    )  # fmt: skip
    assert isinstance(m, dict) and isinstance(w, dict)
    return master, worker, m, w


def test_master_init_lays_out_the_home(nodes: Nodes) -> None:
    master, _worker, m, _w = nodes
    settings = load_master_settings(master)
    assert settings.ssl_cert_thumbprint == m["thumbprint"]
    assert settings.port_number == 8391
    assert settings.master_address == "https://127.0.0.1:8391"
    binding = get_binding(master, "0.0.0.0:8391")
    assert binding is not None and binding.certhash == m["thumbprint"] and binding.certstorename == "Root"
    root = CertStore(master, "Root")
    assert root.get(m["thumbprint"]).private_key is not None  # MakeCert -ss Root keeps the key in Root
    assert root.contains(m["admin_thumbprint"])  # the admin cert must pass the master's handshake
    assert CertStore(master, "My").get(m["admin_thumbprint"]).private_key is not None
    assert (master / "master.cer").exists()


def test_worker_init_trusts_and_pins_the_master(nodes: Nodes) -> None:
    _master, worker, m, w = nodes
    settings = load_worker_settings(worker)
    assert settings.master_https_cert_thumbprint == m["thumbprint"]
    assert settings.worker_https_cert_thumbprint == w["thumbprint"]
    assert settings.master_endpoint == "https://127.0.0.1:8391"
    assert settings.agent_id == w["agent_id"] and len(settings.agent_id) == 36
    assert CertStore(worker, "Root").contains(m["thumbprint"])
    assert CertStore(worker, "Root").get(m["thumbprint"]).private_key is None  # only the public part
    info = CertStore(worker, "My").info(w["thumbprint"])
    assert info.subject_cns == ["worker1", "127.0.0.2"]
    assert info.san_dns == ["worker1"] and info.san_ip == ["127.0.0.2"]
    assert CertStore(worker, "Root").contains(w["thumbprint"])  # seed step 2


def test_worker_init_warns_when_the_endpoint_host_is_not_in_the_master_cert(
    nodes: Nodes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master, *_ = nodes
    code = main(
        ["--home", str(tmp_path / "w2"), "worker", "init", "--master", "https://master.example:8391",
         "--master-cert", str(master / "master.cer"), "--name", "w2", "--ip", "127.0.0.3"]
    )  # fmt: skip
    _out, err = capsys.readouterr()
    assert code == 0
    assert "master.example" in err and "127.0.0.1" in err


def test_change_the_master_certificate_by_hand(
    nodes: Nodes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master, worker, m, _w = nodes
    cer = tmp_path / "SSISScaleOutMaster.cer"

    # 1. MakeCert.exe -n CN=127.0.0.1 SSISScaleOutMaster.cer -r -ss Root -sr LocalMachine
    new = cli(
        capsys, master, "cert", "create", "-n", "CN=127.0.0.1", "-r", "--store", "Root", "--out", str(cer)
    )
    assert isinstance(new, dict)
    new_t = new["thumbprint"]
    assert new_t != m["thumbprint"] and cer.exists()
    assert CertStore(master, "Root").get(new_t).private_key is not None

    # 2. netsh http show sslcert / delete sslcert / add sslcert ... appid={original appid}
    shown = cli(capsys, master, "binding", "show", "--port", "8391")
    assert isinstance(shown, dict) and shown["certhash"] == m["thumbprint"]
    appid = shown["appid"]
    cli(capsys, master, "binding", "delete", "--port", "8391")
    assert get_binding(master, "0.0.0.0:8391") is None
    cli(
        capsys,
        master,
        "binding",
        "add",
        "--port",
        "8391",
        "--certhash",
        new_t,
        "--store",
        "Root",
        "--appid",
        appid,
    )
    binding = get_binding(master, "0.0.0.0:8391")
    assert binding is not None and binding.certhash == new_t and binding.appid == appid

    # 3. MasterSettings.config: SSLCertThumbprint (typed the way Windows' dialog copies it)
    pasted = "\u200e" + " ".join(new_t[i : i + 2].lower() for i in range(0, 40, 2))
    cli(capsys, master, "settings", "set", "master", "SSLCertThumbprint", pasted)
    assert load_master_settings(master).ssl_cert_thumbprint == new_t

    # 5.1 install the master certificate into the worker's Root store
    cli(capsys, worker, "cert", "import", str(cer), "--store", "Root")
    assert CertStore(worker, "Root").contains(new_t)
    assert CertStore(worker, "Root").get(new_t).private_key is None
    # 5.2 WorkerSettings.config: MasterHttpsCertThumbprint
    cli(capsys, worker, "settings", "set", "worker", "MasterHttpsCertThumbprint", new_t)
    assert load_worker_settings(worker).master_https_cert_thumbprint == new_t


def test_change_the_worker_certificate_by_hand(
    nodes: Nodes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master, worker, _m, w = nodes
    cer = tmp_path / "SSISScaleOutWorker.cer"
    old_t = w["thumbprint"]

    # 1. MakeCert.exe -n CN=worker1;CN=127.0.0.2 SSISScaleOutWorker.cer -r -ss My -sr LocalMachine
    new = cli(
        capsys,
        worker,
        "cert",
        "create",
        "-n",
        "CN=worker1;CN=127.0.0.2",
        "-r",
        "--store",
        "My",
        "--out",
        str(cer),
    )
    assert isinstance(new, dict)
    new_t = new["thumbprint"]
    assert new["san_ip"] == ["127.0.0.2"] and new["san_dns"] == ["worker1"] and new["has_private_key"]

    # 2. install the client certificate into the worker's Root store
    cli(capsys, worker, "cert", "import", str(cer), "--store", "Root")
    assert CertStore(worker, "Root").contains(new_t)

    # 3. certmgr /del the old certificate (both now share CN worker1, so by CN it refuses) ...
    code = main(["--home", str(worker), "cert", "delete", "--store", "My", "--cn", "worker1"])
    _out, err = capsys.readouterr()
    assert code != 0 and old_t in err and new_t in err
    cli(capsys, worker, "cert", "delete", "--store", "My", old_t)
    assert not CertStore(worker, "My").contains(old_t)
    # ... and winhttpcertcfg -g: grant the service account access to the new key
    if os.geteuid() == 0:
        cli(capsys, worker, "cert", "grant", new_t, "--store", "My", "--account", "nobody")
        key = CertStore(worker, "My").key_path(new_t)
        assert key.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

    # 4. WorkerSettings.config: WorkerHttpsCertThumbprint
    cli(capsys, worker, "settings", "set", "worker", "WorkerHttpsCertThumbprint", new_t.lower())
    assert load_worker_settings(worker).worker_https_cert_thumbprint == new_t

    # 5. install the client certificate into the master's Root store
    cli(capsys, master, "cert", "import", str(cer), "--store", "Root")
    assert CertStore(master, "Root").contains(new_t)
    assert CertStore(master, "Root").get(new_t).private_key is None


def test_a_typo_in_a_settings_key_names_the_right_one(
    nodes: Nodes, capsys: pytest.CaptureFixture[str]
) -> None:
    _master, worker, *_ = nodes
    code = main(["--home", str(worker), "settings", "set", "worker", "MasterHttpsCertThumbprnt", "AB"])
    _out, err = capsys.readouterr()
    assert code != 0 and "MasterHttpsCertThumbprint" in err


def test_a_typo_in_a_thumbprint_says_what_is_wrong(nodes: Nodes, capsys: pytest.CaptureFixture[str]) -> None:
    _master, worker, *_ = nodes
    code = main(
        ["--home", str(worker), "settings", "set", "worker", "MasterHttpsCertThumbprint", "AB" * 19 + "G1"]
    )
    _out, err = capsys.readouterr()
    assert code != 0 and "'G'" in err and "hex" in err
