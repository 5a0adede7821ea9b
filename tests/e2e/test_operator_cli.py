"""The operator's command line against a real master and worker: remote identities and roles,
copyable output, JSON errors and NDJSON logs, workers by name, statuses by name.

Every command runs as a real ``packfleet`` subprocess; the remote manager has a home of its own
with nothing in it, and reaches the master only through --master/--master-cert and its identity.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from packfleet.localcluster import LocalCluster

from .conftest import EXAMPLE, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Master + worker1, enabled, the sample project deployed (SQLite catalog)."""
    root = tmp_path_factory.mktemp("operator")
    with LocalCluster(root) as cluster:
        cluster.init_master()
        cluster.start_master()
        cluster.add_worker("worker1", "127.0.0.2")
        cluster.start_worker("worker1")
        cluster.wait_for_workers(["worker1"])
        cluster.cli(cluster.master.home, "deploy", str(EXAMPLE), as_json=True)
        yield cluster


def packfleet(
    *args: str, env: dict[str, str] | None = None, home: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One ``packfleet`` process; stdout not a terminal, 80 columns, as a pipe or a CI log sees it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PACKFLEET_")}
    argv = [sys.executable, "-m", "packfleet", *(["--home", str(home)] if home else []), *args]
    return subprocess.run(
        argv,
        env={**base, "COLUMNS": "80", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def identity(cluster: LocalCluster, name: str, role: str, out: Path) -> dict[str, str]:
    """Create identity ``name`` on the master; return the environment a remote manager uses."""
    done = packfleet(
        "manager", "identity", "create", name, "--role", role, "--out", str(out), "--json",
        home=cluster.master.home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["role"] == role
    return {
        "PACKFLEET_MASTER": f"https://{cluster.host}:{cluster.port}",
        "PACKFLEET_MASTER_CERT": str(cluster.master.home / "master.cer"),
        "PACKFLEET_ADMIN_CERT": record["cert_file"],
        "PACKFLEET_ADMIN_KEY": record["key_file"],
    }


def error_document(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc = json.loads(done.stderr.strip().splitlines()[-1])
    assert isinstance(doc, dict)
    assert doc["exit_code"] == done.returncode
    return doc


def test_identity_files_are_pem_and_the_key_is_private(one: LocalCluster, tmp_path: Path) -> None:
    env = identity(one, "keys", "viewer", tmp_path / "keys")
    key, cert = Path(env["PACKFLEET_ADMIN_KEY"]), Path(env["PACKFLEET_ADMIN_CERT"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    again = packfleet(
        "manager", "identity", "create", "keys", "--role", "viewer", "--out", str(tmp_path / "keys"),
        home=one.master.home,
    )  # fmt: skip
    assert again.returncode == 2, again.stderr  # never overwrites an identity's files
    listed = packfleet("manager", "identity", "list", "--json", home=one.master.home)
    assert {"name": "keys", "role": "viewer"}.items() <= next(
        r for r in json.loads(listed.stdout) if r["name"] == "keys"
    ).items()


def test_a_viewer_reads_everything_and_changes_nothing(one: LocalCluster, tmp_path: Path) -> None:
    env = identity(one, "alice", "viewer", tmp_path / "alice")
    elsewhere = tmp_path / "laptop"  # a home with no settings and no stores at all
    listed = packfleet("manager", "worker", "list", "--json", env=env, home=elsewhere)
    assert listed.returncode == 0, listed.stderr
    workers = json.loads(listed.stdout)
    assert [w["state"] for w in workers] == ["online"]  # judged by the master
    assert workers[0]["online"] is True
    assert packfleet("manager", "audit", "--json", env=env, home=elsewhere).returncode == 0
    assert packfleet("executions", "list", "--json", env=env, home=elsewhere).returncode == 0

    refused = packfleet("manager", "worker", "disable", "worker1", "--json", env=env, home=elsewhere)
    assert refused.returncode == 4
    doc = error_document(refused)
    assert "alice" in doc["error"] and doc["type"] == "Refused"
    run = packfleet("run", "default/etl/load", "--json", env=env, home=elsewhere)
    assert run.returncode == 4, run.stderr

    revoked = packfleet("manager", "identity", "revoke", "alice", "--json", home=one.master.home)
    assert revoked.returncode == 0, revoked.stderr
    after = packfleet("manager", "worker", "list", "--json", env=env, home=elsewhere)
    assert after.returncode != 0
    audit = json.loads(packfleet("manager", "audit", "--json", home=one.master.home).stdout)
    actions = [(r["action"], r["target"]) for r in audit]
    assert ("principal.add", "alice") in actions and ("principal.remove", "alice") in actions


def test_an_executor_runs_on_a_worker_named_by_name(one: LocalCluster, tmp_path: Path) -> None:
    env = identity(one, "ci", "executor", tmp_path / "ci")
    flags = ["--master", env["PACKFLEET_MASTER"], "--master-cert", env["PACKFLEET_MASTER_CERT"]]
    flags += ["--admin-cert", env["PACKFLEET_ADMIN_CERT"], "--admin-key", env["PACKFLEET_ADMIN_KEY"]]
    done = packfleet(*flags, "run", "default/etl/load", "--worker", "worker1", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == 7 and record["task"]["agent_id"] == one.agent_id("worker1")
    deploy = packfleet(*flags, "deploy", str(EXAMPLE), "--json")
    assert deploy.returncode == 4  # deploying is an admin's
    unknown = packfleet(*flags, "run", "default/etl/load", "--worker", "nobody", "--json")
    assert unknown.returncode == 2 and "nobody" in error_document(unknown)["error"]


def test_executions_list_filters_by_status_name(one: LocalCluster) -> None:
    failed = packfleet("run", "default/etl/fail", "--wait", home=one.master.home)
    assert failed.returncode == 8
    rows = json.loads(
        packfleet("executions", "list", "--status", "failed", "--json", home=one.master.home).stdout
    )
    assert rows and {r["status"] for r in rows} == {4}
    bad = packfleet("executions", "list", "--status", "broken", "--json", home=one.master.home)
    assert bad.returncode == 2
    doc = error_document(bad)
    assert "failed" in doc["error"] and doc["fix"]


def test_follow_json_streams_ndjson_as_events_arrive(one: LocalCluster) -> None:
    started = packfleet("run", "default/etl/load", "--json", home=one.master.home)
    execution_id = json.loads(started.stdout)["execution_id"]
    done = packfleet("executions", "logs", str(execution_id), "--follow", "--json", home=one.master.home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    events = [json.loads(line) for line in lines]  # every line a document of its own
    assert len(events) >= 2 and all("message" in e for e in events)
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})


def test_local_usage_errors_exit_2_with_a_json_document(one: LocalCluster) -> None:
    done = packfleet("run", "not-a-target", "--json", home=one.master.home)
    assert done.returncode == 2
    doc = error_document(done)
    assert doc["type"] == "UsageError" and "FOLDER/PROJECT/PACKAGE" in doc["error"] and doc["fix"]
    missing = packfleet("run", "--json", home=one.master.home)  # click's own usage error
    assert missing.returncode == 2 and error_document(missing)["type"] == "UsageError"
    nowhere = packfleet("manager", "worker", "list", "--json", home=one.root / "empty")
    assert nowhere.returncode == 3 and "--master" in error_document(nowhere)["fix"]


def test_tables_keep_whole_values_at_80_columns(one: LocalCluster) -> None:
    agent = one.agent_id("worker1")
    listing = packfleet("manager", "worker", "list", home=one.master.home)
    assert listing.returncode == 0, listing.stderr
    assert agent in listing.stdout and "…" not in listing.stdout
    assert listing.stdout.splitlines()[0].split()[:2] == ["AGENT", "ID"]
    wide = packfleet("manager", "worker", "list", "--wide", home=one.master.home)
    thumbprint = json.loads(
        packfleet("manager", "worker", "show", "worker1", "--json", home=one.master.home).stdout
    )
    active = [c["thumbprint"] for c in thumbprint["certificates"] if c["status"] == "active"]
    assert active and active[0] in wide.stdout
    audit = packfleet("manager", "audit", home=one.master.home)
    assert "…" not in audit.stdout and "..." not in audit.stdout
    assert "principal.add" in audit.stdout or "worker.add" in audit.stdout or "certificate" in audit.stdout


def test_a_revoked_worker_comes_back_with_the_commands_its_log_names(one: LocalCluster) -> None:
    master, worker = one.master.home, one.workers["worker1"]
    agent = one.agent_id("worker1")
    shown = json.loads(packfleet("manager", "worker", "show", "worker1", "--json", home=master).stdout)
    old = next(c["thumbprint"] for c in shown["certificates"] if c["status"] == "active")
    revoked = packfleet("manager", "worker", "revoke-cert", old, "--json", home=master)
    assert revoked.returncode == 0, revoked.stderr

    def state() -> str:
        rows = json.loads(packfleet("manager", "worker", "list", "--json", home=master).stdout)
        return str(next(r for r in rows if r["agent_id"] == agent)["state"])

    assert state() == "revoked"  # never online, though its last heartbeat is seconds old
    plain = packfleet("manager", "worker", "list", home=master).stdout
    assert "revoked" in plain and "online" not in plain
    wait_until(
        lambda: "manager worker connect" in worker.log_path.read_text() if worker.log_path else False,
        timeout=60,
        what="the worker's log to name the command that re-admits it",
    )

    token = json.loads(
        packfleet("manager", "worker", "connect", "worker1", "--token", "--json", home=master).stdout
    )["token"]
    joined = packfleet("worker", "join", token, "--json", home=worker.home)
    assert joined.returncode == 0, joined.stderr
    result = json.loads(joined.stdout)
    assert result["created_certificate"] is True and result["thumbprint"] != old
    assert result["agent_id"] == agent
    assert result["reloaded_agent_pid"] == (worker.process.pid if worker.process else None)
    wait_until(lambda: state() == "online", timeout=60, what="the re-admitted worker to be online")
    run = packfleet("run", "default/etl/noop", "--worker", "worker1", "--wait", "--json", home=master)
    assert run.returncode == 0, run.stderr  # the same running agent, no restart
    assert worker.running


def test_run_wait_says_why_it_is_pending_and_timeout_ends_the_wait(one: LocalCluster) -> None:
    master, worker = one.master.home, one.workers["worker1"]
    assert packfleet("manager", "worker", "disable", "worker1", home=master).returncode == 0
    try:
        done = packfleet("run", "default/etl/noop", "--wait", "--timeout", "5", home=master)
    finally:
        assert packfleet("manager", "worker", "enable", "worker1", home=master).returncode == 0
    assert done.returncode == 10, done.stderr
    assert "is disabled; fix: packfleet manager worker enable" in done.stderr
    assert "no enabled online worker can take it" in done.stderr
    assert "did not finish within --timeout 5 s" in done.stderr

    # The worker's own gate, with its figures: free memory can never be above this.
    set_memory = ("settings", "set", "worker", "TaskRequestMinMemory")
    assert packfleet(*set_memory, "100000000", home=worker.home).returncode == 0
    assert worker.process is not None
    log_path = worker.log_path
    assert log_path is not None
    os.kill(worker.process.pid, signal.SIGHUP)
    try:
        # A lease long-poll already in flight may still take a task; the gate applies from the
        # next one, which the worker logs.
        wait_until(
            lambda: "not asking for tasks: free memory" in log_path.read_text(),
            timeout=60,
            what="the worker to close its gate",
        )
        done = packfleet("run", "default/etl/noop", "--wait", "--timeout", "8", "--json", home=master)
        assert done.returncode == 10
        doc = error_document(done)
        assert doc["type"] == "WaitTimeout" and "TaskRequestMinMemory 100000000 MB" in done.stderr
        assert re.search(r"free memory \d+ MB is not above TaskRequestMinMemory", done.stderr)
    finally:
        assert packfleet(*set_memory, "1", home=worker.home).returncode == 0
        os.kill(worker.process.pid, signal.SIGHUP)
    again = packfleet("run", "default/etl/noop", "--wait", "--timeout", "120", home=master)
    assert again.returncode == 0, again.stderr


def _doctor(home: Path) -> dict[str, dict[str, Any]]:
    done = packfleet("doctor", "--json", home=home)
    return {f["check"]: f for f in json.loads(done.stdout)}


def test_doctor_on_a_worker_reports_the_masters_view(one: LocalCluster) -> None:
    master, worker = one.master.home, one.workers["worker1"].home
    seen = _doctor(worker)["worker.master_view"]
    assert seen["severity"] == "ok" and "enabled and online" in seen["message"]
    assert packfleet("manager", "worker", "disable", "worker1", home=master).returncode == 0
    try:
        seen = _doctor(worker)["worker.master_view"]
        assert seen["severity"] == "warning" and "disabled" in seen["message"]
        assert seen["fix"] == f"on the master: packfleet manager worker enable {one.agent_id('worker1')}"
    finally:
        assert packfleet("manager", "worker", "enable", "worker1", home=master).returncode == 0


def test_doctor_on_the_master_probes_where_it_really_listens(one: LocalCluster) -> None:
    listen = json.loads((one.master.home / "master.listen").read_text())
    assert listen["port"] == one.port and listen["host"] == one.host
    assert one.master.process is not None and listen["pid"] == one.master.process.pid
    serving = _doctor(one.master.home)["master.serving"]
    assert serving["severity"] == "ok", serving
    assert f"on {one.host}:{one.port} serves the bound certificate" in serving["message"]


def test_a_manager_home_can_name_the_identity_files(one: LocalCluster, tmp_path: Path) -> None:
    env = identity(one, "bob", "admin", tmp_path / "bob")
    laptop = tmp_path / "laptop"
    for key, value in (
        ("MasterEndpoint", env["PACKFLEET_MASTER"]),
        ("MasterCertFile", env["PACKFLEET_MASTER_CERT"]),
        ("AdminCertFile", env["PACKFLEET_ADMIN_CERT"]),
        ("AdminKeyFile", env["PACKFLEET_ADMIN_KEY"]),
    ):
        done = packfleet("settings", "set", "manager", key, value, home=laptop)
        assert done.returncode == 0, done.stderr
    listed = packfleet("manager", "worker", "list", "--json", home=laptop)
    assert listed.returncode == 0, listed.stderr
    assert [w["agent_id"] for w in json.loads(listed.stdout)] == [one.agent_id("worker1")]
    Path(env["PACKFLEET_ADMIN_KEY"]).chmod(0o644)
    exposed = packfleet("manager", "worker", "list", "--json", home=laptop)
    assert exposed.returncode == 4 and error_document(exposed)["fix"].startswith("chmod 600 ")
