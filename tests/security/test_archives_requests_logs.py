"""Archive attacks on deploy, malformed and oversized requests, and log injection and flooding.

A real master over real TLS; every refusal is checked for its status and for naming the problem.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import stat
import struct
import time
import warnings
import zipfile
from datetime import UTC, datetime
from typing import Any

import pytest

from master.support import MasterHome, heartbeat_body
from packfleet.doctor import check_master
from packfleet.localcluster import LocalCluster
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import CertStore, Credential
from packfleet.protocol import routes
from packfleet.transport import client_context
from security.conftest import CertFactory, Peer, lease_body, new_agent

MANIFEST = b'[project]\nname = "p"\nversion = "1"\n[packages.job]\nkind = "python"\nentry = "m:main"\n'
Entry = tuple[str | zipfile.ZipInfo, bytes]


def _zip(*extra: Entry, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    entries: list[Entry] = [("packfleet.toml", MANIFEST), ("m.py", b"def main(ctx): pass\n"), *extra]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name: that is the attack
        with zipfile.ZipFile(buffer, "w", method) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buffer.getvalue()


def _lie_about_size(data: bytes, name: str, size: int) -> bytes:
    raw = bytearray(data)
    position = raw.find(b"PK\x01\x02")
    while position >= 0:
        length = struct.unpack_from("<H", raw, position + 28)[0]
        if raw[position + 46 : position + 46 + length] == name.encode():
            struct.pack_into("<I", raw, position + 24, size)
            return bytes(raw)
        position = raw.find(b"PK\x01\x02", position + 4)
    raise AssertionError(name)


def _corrupt(data: bytes, name: str) -> bytes:
    raw = bytearray(data)
    raw[raw.find(name.encode()) + len(name) + 2] ^= 0xFF  # a byte of its compressed data
    return bytes(raw)


def _symlink(name: str) -> Entry:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, b"/etc/passwd"


ARCHIVES: dict[str, tuple[Any, str]] = {
    "bad-crc": (lambda: _corrupt(_zip(("zzz.txt", b"late entry " * 200)), "zzz.txt"), "'zzz.txt' is corrupt"),
    "size-lie-bomb": (
        lambda: _lie_about_size(_zip(("big.bin", bytes(2_000_000))), "big.bin", 10),
        "'big.bin' is corrupt",
    ),
    "long-name": (lambda: _zip(("a" * 256 + ".py", b"")), "Linux NAME_MAX"),
    "long-path": (lambda: _zip(("/".join(["d" * 200] * 6) + "/x.py", b"")), "the limit is 1024"),
    "traversal": (lambda: _zip(("../evil.py", b"")), "'..'"),
    "absolute": (lambda: _zip(("/etc/cron.d/evil", b"")), "absolute paths"),
    "symlink": (lambda: _zip(_symlink("link")), "symbolic link"),
    "bzip2": (lambda: _zip(method=zipfile.ZIP_BZIP2), "compressed with method 12"),
    "duplicate": (lambda: _zip(("m.py", b"def main(ctx): return 1\n")), "appears twice"),
    "not-a-zip": (lambda: b"MZ\x90\x00 this is not a zip archive at all", "not a zip archive"),
}


@pytest.mark.parametrize("attack", list(ARCHIVES))
async def test_deploy_refuses_an_archive_a_worker_would_refuse(
    mh: MasterHome, manager: ManagerClient, peer: Peer, attack: str
) -> None:
    make, says = ARCHIVES[attack]
    path = routes.ADMIN_PROJECTS + "?folder=default"
    answer = await peer.request(mh.admin, "POST", path, data=make())
    assert answer.status == 400, answer.text
    assert answer.body["type"] == "urn:packfleet:problem:invalid-archive" and says in answer.text
    assert await manager.list_projects() == []


# --- malformed and oversized requests ---------------------------------------------------------------


async def test_a_body_that_is_not_json_is_a_400_naming_it(mh: MasterHome, peer: Peer) -> None:
    answer = await peer.request(mh.worker, "POST", routes.WORKER_HEARTBEAT, data=b"{agent_id: nope")
    assert answer.status == 400 and "is not JSON" in answer.text


async def test_a_json_array_where_an_object_belongs_is_a_400(mh: MasterHome, peer: Peer) -> None:
    answer = await peer.request(mh.worker, "POST", routes.WORKER_HEARTBEAT, body=[1, 2, 3])
    assert answer.status == 400 and "Heartbeat" in answer.text


async def test_a_missing_field_is_named(mh: MasterHome, peer: Peer) -> None:
    body = heartbeat_body(new_agent())
    del body["machine_name"]
    answer = await peer.request(mh.worker, "POST", routes.WORKER_HEARTBEAT, body=body)
    assert answer.status == 400 and "machine_name" in answer.text


async def test_a_field_of_the_wrong_type_is_named(mh: MasterHome, manager: ManagerClient, peer: Peer) -> None:
    agent = new_agent()
    await peer.heartbeat(mh.worker, agent)
    await manager.enable_worker(agent)
    body = lease_body(agent) | {"capacity": "lots"}
    answer = await peer.request(mh.worker, "POST", routes.WORKER_LEASE, body=body)
    assert answer.status == 400 and "capacity" in answer.text


async def test_an_agent_id_that_is_not_a_guid_is_a_400(mh: MasterHome, peer: Peer) -> None:
    answer = await peer.heartbeat(mh.worker, "'; DROP TABLE worker_agents; --")
    assert answer.status == 400 and "is not a worker agent id" in answer.text


async def test_an_oversized_heartbeat_is_a_413_before_it_is_read(mh: MasterHome, peer: Peer) -> None:
    body = heartbeat_body(new_agent()) | {"display_name": "x" * (5 * 1024 * 1024)}
    answer = await peer.request(mh.worker, "POST", routes.WORKER_HEARTBEAT, body=body)
    assert answer.status == 413 and "this route takes at most" in answer.text


async def test_an_oversized_anonymous_join_is_a_413(peer: Peer) -> None:
    answer = await peer.request(None, "POST", routes.JOIN, data=b"{" + b" " * (128 * 1024) + b"}")
    assert answer.status == 413 and "at most 65536 bytes" in answer.text


@pytest.mark.parametrize(
    ("path", "says"),
    [
        (routes.ADMIN_EXECUTIONS + "?limit=" + "9" * 40, "out of range"),
        (routes.ADMIN_AUDIT + "?after_id=-1", "out of range"),
        (routes.ADMIN_EXECUTIONS + "/" + "9" * 40, "execution"),
        (routes.ADMIN_EXECUTIONS + "/abc", "execution"),
        (routes.ADMIN_AUDIT + "?after_id=&limit=", "query parameter limit is empty"),
        (routes.ADMIN_EXECUTIONS + "?status=&limit=20", "query parameter status is empty"),
    ],
    ids=[
        "huge-limit",
        "negative-after-id",
        "huge-execution-id",
        "text-execution-id",
        "empty-after-id",
        "empty-status",
    ],
)
async def test_out_of_range_admin_input_is_refused_never_a_500(
    mh: MasterHome, peer: Peer, path: str, says: str
) -> None:
    answer = await peer.request(mh.admin, "GET", path)
    assert answer.status in (400, 404), answer.text
    assert says in answer.text


@pytest.mark.parametrize("route", [routes.ADMIN_EXECUTIONS, routes.ADMIN_EXECUTIONS_BULK])
async def test_a_huge_retry_count_is_a_400_naming_the_range(mh: MasterHome, peer: Peer, route: str) -> None:
    run = {"folder": "default", "project": "etl", "package": "load", "retry_count": 10**9}
    body: dict[str, Any] = run if route == routes.ADMIN_EXECUTIONS else run | {"count": 2}
    answer = await peer.request(mh.admin, "POST", route, body=body)
    assert answer.status == 400 and "retry_count must be 0..100" in answer.text


@pytest.mark.parametrize(
    ("route", "body"),
    [
        (routes.WORKER_COMPLETE, {"reports": [{"task_id": 10**30, "attempt": 1, "outcome": "failed"}]}),
        (routes.WORKER_REPORT, {"reports": [{"task_id": 10**30, "attempt": 1, "outcome": "failed"}]}),
        (routes.WORKER_LEASE, {"capacity": 2**64, "wait_seconds": 0, "lease_seconds": 60}),
    ],
    ids=["huge-task-id", "huge-task-id-report", "huge-capacity"],
)
async def test_huge_integers_from_a_worker_are_a_400_never_a_500(
    mh: MasterHome, manager: ManagerClient, peer: Peer, route: str, body: dict[str, Any]
) -> None:
    agent = new_agent()
    await peer.heartbeat(mh.worker, agent)
    await manager.enable_worker(agent)
    answer = await peer.request(mh.worker, "POST", route, body={"agent_id": agent} | body)
    assert answer.status == 400 and "is out of the 64-bit integer range" in answer.text


# --- log injection and flooding ---------------------------------------------------------------------


def _lines(log: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in log.records if r.name == "packfleet.master"]


async def test_a_newline_in_the_url_cannot_forge_a_log_line(
    peer: Peer, master_log: pytest.LogCaptureFixture
) -> None:
    forged = "%0Arefused POST /api/v1/admin/workers from 10.0.0.1: 200 all good"
    answer = await peer.request(None, "GET", "/api/v1/nothing" + forged)
    assert answer.status == 403
    [line] = [m for m in _lines(master_log) if "/api/v1/nothing" in m]
    assert "\n" not in line and "\\nrefused POST" in line


async def test_terminal_escapes_in_a_join_name_are_escaped_in_the_log(
    mh: MasterHome,
    master: MasterServer,
    manager: ManagerClient,
    peer: Peer,
    certs: CertFactory,
    master_log: pytest.LogCaptureFixture,
) -> None:
    from security.test_identity_takeover import _join_body, _token

    token = await _token(manager, master)
    body = await _join_body(peer, token, certs.good("j"), new_agent())
    body["display_name"] = "evil\x1b[2J\rworker joined\nroot"
    answer = await peer.request(None, "POST", routes.JOIN, body=body)
    assert answer.status == 200, answer.text
    [line] = [m for m in _lines(master_log) if "joined with token" in m]
    assert "\x1b" not in line and "\n" not in line and "\r" not in line
    assert "evil\\x1b[2J\\rworker joined\\nroot" in line


async def test_refusals_are_rate_limited_with_a_count_of_suppressed_lines(
    master: MasterServer, peer: Peer, certs: CertFactory, master_log: pytest.LogCaptureFixture
) -> None:
    from packfleet.master._server import REFUSAL_LOG

    assert master._runner is not None
    limiter = master._runner.app[REFUSAL_LOG]
    for _ in range(12):
        assert (await peer.request(None, "GET", routes.ADMIN_WORKERS)).status == 403
    refused = [m for m in _lines(master_log) if m.startswith("refused GET")]
    assert len(refused) == 5 and all("from 127.0.0.1" in m and "no certificate" in m for m in refused)
    limiter.window = 0.2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        await peer.request(None, "GET", routes.ADMIN_WORKERS)
        if any("similar line(s) suppressed" in m for m in _lines(master_log)):
            break
    assert any("(7 similar line(s) suppressed)" in m for m in _lines(master_log))


async def test_an_admin_refusal_names_the_presented_thumbprint_in_the_log(
    mh: MasterHome, peer: Peer, master_log: pytest.LogCaptureFixture
) -> None:
    answer = await peer.request(mh.worker, "GET", routes.ADMIN_WORKERS)
    assert answer.status == 403 and mh.worker.thumbprint in answer.text
    assert any(f"certificate {mh.worker.thumbprint}" in m for m in _lines(master_log) if "refused GET" in m)


# --- the master names Root certificates it will never accept ----------------------------------------


async def test_doctor_and_start_name_a_root_certificate_the_master_never_accepts(
    mh: MasterHome, certs: CertFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bad = certs.ca_true("old-ca")
    root = CertStore(mh.home, "Root")
    root.add(Credential(bad.certificate))
    caplog.set_level(logging.WARNING, logger="packfleet.master")
    server = MasterServer(mh.home, host="127.0.0.1", port=0, watch_interval=0)
    await server.start()
    try:
        assert any(str(root.cert_path(bad.thumbprint)) in r.getMessage() for r in caplog.records)
    finally:
        await server.stop()
    findings = [
        f for f in check_master(mh.home, now=datetime.now(UTC), probe=False) if f.check == "master.root-store"
    ]
    [finding] = findings
    assert finding.severity == "warning" and "CA:TRUE" in finding.message
    assert str(root.cert_path(bad.thumbprint)) in finding.message
    assert finding.fix == f"packfleet cert delete --store Root {bad.thumbprint}"


# --- the same against a real master process ----------------------------------------------------------


def test_a_real_master_process_escapes_and_limits_refusal_lines(master_process: LocalCluster) -> None:
    cluster = master_process
    ctx = client_context(None, None, cluster.master_pem().read_text())
    for _ in range(10):
        conn = http.client.HTTPSConnection(cluster.host, cluster.port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/api/v1/admin/workers%0AFORGED-LINE%1b[31m")
            assert conn.getresponse().status == 403
        finally:
            conn.close()
    log_path = cluster.master.log_path
    assert log_path is not None
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if "FORGED-LINE" in text:
            break
        time.sleep(0.2)
    lines = text.splitlines()
    assert not any(line.startswith("FORGED-LINE") for line in lines)
    assert "\x1b" not in text
    assert sum("\\nFORGED-LINE" in line for line in lines) == 5  # the rest are counted, not written
