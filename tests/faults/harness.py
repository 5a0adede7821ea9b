"""The fault-injection harness: a real cluster, the faults, and the ledger that judges the outcome.

Every node is a real process (packfleet.localcluster). Faults touch only what this harness started:
its own processes by PID, iptables rules that match one port of its own fault proxy, a tmpfs it
mounted, a PostgreSQL cluster it created on its own port.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packfleet.localcluster import LocalCluster, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "etl"
#: SSIS execution status codes (catalog.executions.status).
RUNNING, SUCCEEDED, ENDED_UNEXPECTEDLY = 2, 7, 6
FINISHED = {3, 4, 6, 7, 9}
#: Short settings so a lease expires and is swept within seconds. HeartbeatErrorTolerance is the
#: bound on a catalog outage (and a partition) that ends no healthy execution.
LEASE_SECONDS = 4
WORKER_SETTINGS = {"LeaseInterval": f"00:00:0{LEASE_SECONDS}", "HeartbeatErrorTolerance": "00:00:40"}


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 60, interval: float = 0.25, what: str
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


# --- a TCP relay between one worker and the master ------------------------------------------------


class FaultProxy:
    """Relays one worker's connections to the master, so that worker alone can be cut off.

    Blackholed, it keeps every connection open and forwards nothing (as a dropped link does); the
    iptables partition uses its port instead when it can, so the kernel drops the packets.
    """

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.target_port = host, target_port
        self.blackholed = False
        self._server = socket.create_server((host, 0))
        self.port = int(self._server.getsockname()[1])
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.host, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self._closed:
                data = src.recv(65536)
                if not data:
                    break
                if not self.blackholed:
                    dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        self._server.close()
        self._thread.join(timeout=10)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def can_use_iptables() -> bool:
    return os.geteuid() == 0 and shutil.which("iptables") is not None


@contextlib.contextmanager
def partition(proxy: FaultProxy) -> Iterator[str]:
    """Cut the worker behind ``proxy`` off the master: an iptables DROP on the proxy's one port when
    running as root with iptables, else the proxy blackholes. Healed on the way out."""
    if can_use_iptables():
        rule = ["INPUT", "-i", "lo", "-p", "tcp", "-d", proxy.host, "--dport", str(proxy.port), "-j", "DROP"]
        subprocess.run(["iptables", "-I", *rule], check=True, timeout=30)
        try:
            yield "iptables"
        finally:
            subprocess.run(["iptables", "-D", *rule], check=False, timeout=30)
    else:
        proxy.blackholed = True
        try:
            yield "proxy"
        finally:
            proxy.blackholed = False


# --- other faults -----------------------------------------------------------------------------------


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP a process this harness started; SIGCONT on the way out."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "16m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``where`` (needs root); unmounted in ``finally``."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True, timeout=30
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` until a write fails (ENOSPC); remove the file to heal."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        for _ in range(100_000):  # bounded: 100 000 x 64 KiB is far more than any small tmpfs
            out.write(b"\0" * 65536)
    return filler


def faketime_env(offset: str) -> dict[str, str]:
    """Environment that runs a process with its clock moved by ``offset`` (libfaketime, e.g. "+30s")."""
    for lib in (
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ):
        if Path(lib).exists():
            return {"LD_PRELOAD": lib, "FAKETIME": offset, "FAKETIME_NO_CACHE": "1"}
    raise AssertionError("libfaketime is not installed: apt-get install -y faketime")


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own on a free port (pg_createcluster), never the shared one."""

    def __init__(self) -> None:
        listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True)
        self.version = listed.stdout.split()[0]
        self.name = f"pffault{uuid.uuid4().hex[:8]}"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def __enter__(self) -> ThrowawayPostgres:
        subprocess.run(
            ["pg_createcluster", self.version, self.name, "--port", str(self.port), "--", "--auth=trust"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        try:
            self.start()
        except BaseException:
            self.drop()
            raise
        return self

    def start(self) -> None:
        self._ctl("start")

    def crash(self) -> None:
        """Stop without a checkpoint, ending every session at once (as a crash does)."""
        self._ctl("stop", "-m", "immediate")

    def drop(self) -> None:
        subprocess.run(
            ["pg_dropcluster", "--stop", self.version, self.name],
            check=False,
            capture_output=True,
            timeout=120,
        )

    def __exit__(self, *_exc: object) -> None:
        self.drop()


# --- the cluster ------------------------------------------------------------------------------------


@dataclass
class FaultCluster:
    """A master and two workers, each worker behind its own fault proxy, example project deployed."""

    cluster: LocalCluster
    proxies: dict[str, FaultProxy] = field(default_factory=dict)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        root: Path,
        *,
        catalog_url: str | None = None,
        worker_env: dict[str, dict[str, str]] | None = None,
    ) -> Iterator[FaultCluster]:
        with LocalCluster(root, catalog_url=catalog_url) as cluster:
            faults = cls(cluster)
            try:
                cluster.init_master()
                cluster.start_master()
                for name, ip in (("worker1", "127.0.0.2"), ("worker2", "127.0.0.3")):
                    cluster.add_worker(name, ip, settings=WORKER_SETTINGS)
                    proxy = FaultProxy(cluster.port)
                    faults.proxies[name] = proxy
                    endpoint = f"https://{cluster.host}:{proxy.port}"
                    cluster.cli(
                        cluster.workers[name].home, "settings", "set", "worker", "MasterEndpoint", endpoint
                    )
                    faults.start_worker(name, (worker_env or {}).get(name))
                cluster.wait_for_workers(["worker1", "worker2"], timeout=60)
                cluster.cli(cluster.master.home, "deploy", str(EXAMPLE), as_json=True)
                yield faults
            finally:
                for proxy in faults.proxies.values():
                    proxy.close()

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> None:
        saved = self.cluster.env
        self.cluster.env = {**saved, **(env or {})}
        try:
            self.cluster.start_worker(name)
        finally:
            self.cluster.env = saved

    def pid(self, name: str) -> int:
        node = self.cluster.master if name == "master" else self.cluster.workers[name]
        assert node.process is not None, f"{name} is not running"
        return node.process.pid

    def worker_of(self, agent_id: str) -> str:
        return next(n for n in self.cluster.workers if self.cluster.agent_id(n) == agent_id)

    def execution(self, execution_id: int) -> dict[str, Any]:
        found = self.cluster.cli(
            self.cluster.master.home, "executions", "show", str(execution_id), as_json=True, check=False
        )
        return found or {}

    def running_on(self, execution_id: int) -> str:
        """Wait until the execution runs; the name of the worker running it."""
        agent = wait_until(
            lambda: (
                (e := self.execution(execution_id)).get("status") == RUNNING
                and (e.get("task") or {}).get("agent_id")
            ),
            timeout=90,
            interval=0.1,
            what=f"execution {execution_id} to run",
        )
        return self.worker_of(str(agent))

    def restart_master(self, *, kill: bool = True) -> None:
        if kill:
            self.cluster.kill(self.cluster.master)
        else:
            self.cluster.stop(self.cluster.master)
        self.cluster.start_master(wait=60)


# --- the ledger -------------------------------------------------------------------------------------


@dataclass
class Submission:
    key: str
    seconds: float
    outcome: str  # ok / failed / indeterminate
    execution_id: int | None = None
    detail: str = ""


@dataclass
class Ledger:
    """Every submission and, once the faults are healed, what became of each execution."""

    cluster: FaultCluster
    submissions: list[Submission] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def submit(self, seconds: float = 3, *, retry: int = 2, timeout: float = 180) -> Submission:
        """``packfleet run default/etl/sleep`` with an idempotency key; record how the submit ended."""
        key = f"ledger-{uuid.uuid4()}"
        args = ["run", "default/etl/sleep", "--param", f"seconds={seconds:g}", "--retry", str(retry)]
        argv = self.cluster.cluster.command(
            self.cluster.cluster.master.home, *args, "--idempotency-key", key, "--json"
        )
        try:
            done = subprocess.run(
                argv, capture_output=True, env=self.cluster.cluster.env, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            entry = Submission(key, seconds, "indeterminate", detail="no answer in time")
        else:
            entry = _judge(key, seconds, done)
        self.submissions.append(entry)
        return entry

    def settle(self, *, timeout: float = 120) -> dict[str, int]:
        """After healing: read every execution back and classify; return the totals."""
        master = self.cluster.cluster.master.home
        keys = {s.key for s in self.submissions}

        def listed() -> list[dict[str, Any]]:
            rows = self.cluster.cluster.cli(
                master, "executions", "list", "--limit", "10000", as_json=True, check=False
            )
            return [r for r in rows or [] if r.get("idempotency_key") in keys]

        def all_finished() -> list[dict[str, Any]] | None:
            rows = listed()
            return rows if rows and all(r["status"] in FINISHED for r in rows) else None

        try:
            rows = wait_until(all_finished, timeout=timeout, interval=1.0, what="every execution to finish")
        except AssertionError:
            rows = listed()
        by_key: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_key.setdefault(row["idempotency_key"], []).append(row)
        counts = Counter({s.outcome: 0 for s in self.submissions})
        counts.update(s.outcome for s in self.submissions)
        totals = {name: 0 for name in ("lost", "duplicate_success", "stuck", "log_lines_missing")}
        for entry in self.submissions:
            found = by_key.get(entry.key, [])
            if entry.outcome == "ok" and not any(r["execution_id"] == entry.execution_id for r in found):
                totals["lost"] += 1
                self.problems.append(f"lost: {entry}")
            if len(found) > 1:
                totals["duplicate_success"] += 1
                self.problems.append(f"two executions for one submit: {[r['execution_id'] for r in found]}")
            for row in found:
                if row["status"] not in FINISHED:
                    totals["stuck"] += 1
                    self.problems.append(f"stuck: execution {row['execution_id']} status {row['status']}")
                elif row["status"] == SUCCEEDED and not self._logs_complete(row, entry.seconds):
                    totals["log_lines_missing"] += 1
        counts.update(f"executions_{_status_name(r['status'])}" for r in rows)
        self.totals = {**dict(counts), **totals}
        return self.totals

    def _logs_complete(self, row: dict[str, Any], seconds: float) -> bool:
        """Every line the successful attempt printed is stored, or a marker says lines were dropped."""
        events = self.cluster.cluster.cli(
            self.cluster.cluster.master.home,
            "executions",
            "logs",
            str(row["execution_id"]),
            as_json=True,
            check=False,
        )
        attempt = (row.get("task") or {}).get("attempt")
        mine = [e for e in events or [] if e.get("attempt") == attempt]
        ticks = {e["message"] for e in mine if e.get("message_source") == "stdout"}
        wanted = {f"slept {n} s of {seconds:g}" for n in range(1, int(seconds) + 1)}
        marked = any("dropped" in e.get("message", "") or "lost" in e.get("message", "") for e in mine)
        if wanted <= ticks or marked:
            return True
        self.problems.append(
            f"execution {row['execution_id']} attempt {attempt} lacks {sorted(wanted - ticks)}"
        )
        return False

    def assert_clean(self) -> None:
        bad = {k: self.totals.get(k, 0) for k in ("lost", "duplicate_success", "stuck", "log_lines_missing")}
        assert not any(bad.values()), f"ledger {self.totals}: {self.problems}"


def _status_name(status: int) -> str:
    return {
        1: "created", 2: "running", 3: "canceled", 4: "failed", 5: "pending",
        6: "ended_unexpectedly", 7: "succeeded", 8: "stopping", 9: "completed",
    }.get(status, str(status))  # fmt: skip


def _judge(key: str, seconds: float, done: subprocess.CompletedProcess[bytes]) -> Submission:
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    if done.returncode == 0:
        try:
            record = json.loads(out)
        except ValueError:
            return Submission(key, seconds, "indeterminate", detail=out[-300:])
        return Submission(key, seconds, "ok", int(record["execution_id"]))
    text = (err or out)[-400:]
    lost_answer = any(
        phrase in text
        for phrase in (
            "cannot reach",
            "did not answer",
            "closed the connection",
            "did not accept",
            "503",
            "502",
        )
    )
    return Submission(key, seconds, "indeterminate" if lost_answer else "failed", detail=text)
