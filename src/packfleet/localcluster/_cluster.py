"""A master and workers on this machine, as real processes with real certificates.

``make demo``, the end-to-end tests and ``make bench`` all stand on this: every step goes through
the ``packfleet`` command line exactly as an administrator would type it (``master init``,
``worker init --master-cert``, ``manager worker add --cert``, ``manager worker enable``), and every
node is a separate process in its own home. Processes are ended by the PIDs this object started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from packfleet._lifetime import die_with_parent
from packfleet.config import load_master_settings, save_master_settings
from packfleet.errors import ClusterError

#: Intervals short enough that a test sees heartbeats, lease expiry and sweeps within seconds.
FAST_WORKER_SETTINGS = {
    "AgentHeartbeatInterval": "00:00:01",
    "TaskHeartbeatInterval": "00:00:01",
    "LeaseInterval": "00:00:04",
    "HeartbeatErrorTolerance": "00:00:30",
    "TaskRequestMaxCPU": "100",
    "TaskRequestMinMemory": "1",
}
FAST_MASTER_SETTINGS = {
    "DealWithExpiredTasksIntervalInMs": "1000",
    "MasterHeartbeatIntervalInMs": "2000",
}


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`SystemExit` (143) in the main thread.

    Python's default for SIGTERM is to die on the spot, skipping ``finally`` blocks and ``__exit__``;
    with this, ``kill <pid>`` of a program holding a :class:`LocalCluster` unwinds through the
    ``with`` and stops every node it started. The previous handler comes back on the way out.
    Outside the main thread (where Python cannot set handlers) it changes nothing.

    >>> with sigterm_exits(), LocalCluster(root) as cluster:  # doctest: +SKIP
    ...     cluster.start_master()
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """One node's home and, while it runs, its process and log file."""

    name: str
    home: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    _log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalCluster:
    """Build and drive a cluster under ``root``; use as a context manager so everything stops.

    >>> with LocalCluster(tmp_path) as cluster:  # doctest: +SKIP
    ...     cluster.init_master()
    ...     cluster.start_master()
    ...     w = cluster.add_worker("worker1", "127.0.0.2")
    ...     cluster.start_worker("worker1")
    ...     cluster.cli(cluster.master.home, "deploy", "examples/etl")
    """

    def __init__(
        self,
        root: Path,
        *,
        catalog_url: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        fast: bool = True,
        echo: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.catalog_url = catalog_url
        self.host = host
        self.port = port or free_port(host)
        #: The web console's port: a free one, so clusters side by side never contend for 8392.
        self.console_port = free_port(host)
        self.fast = fast
        self.echo = echo
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.env.pop("PACKFLEET_HOME", None)
        self.master = Node("master", root / "master")
        self.workers: dict[str, Node] = {}

    # -- context management ----------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process this cluster started: SIGTERM, then SIGKILL after a grace period."""
        for node in [*self.workers.values(), self.master]:
            self.stop(node, timeout=10)

    # -- the command line ------------------------------------------------------------------

    def command(self, home: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "packfleet", "--home", str(home), *args]

    def cli(
        self,
        home: Path,
        *args: str,
        check: bool = True,
        as_json: bool = False,
        timeout: float = 120,
    ) -> Any:
        """Run one ``packfleet`` command; with ``as_json`` add ``--json`` and return the parsed output."""
        argv = self.command(home, *args, *(["--json"] if as_json else []))
        if self.echo:
            self.echo("$ packfleet " + " ".join(_shorten(a, self.root) for a in argv[3:]))
        # Shown to a person: one stream, in the order the command wrote it. Parsed: stdout alone.
        interleave = self.echo is not None and not as_json
        done = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if interleave else subprocess.PIPE,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        out, err = done.stdout.decode(), (done.stderr or b"").decode()
        if interleave and self.echo is not None:
            for line in out.rstrip().splitlines():
                self.echo("  " + line)
        if check and done.returncode != 0:
            raise ClusterError(
                f"`packfleet {' '.join(args)}` exited {done.returncode}\n{err or out}".rstrip()
            )
        if as_json:
            return json.loads(out) if done.returncode == 0 and out.strip() else None
        return done

    # -- master ----------------------------------------------------------------------------

    def init_master(self, *extra: str) -> dict[str, Any]:
        args = ["master", "init", "--cn", self.host, "--port", str(self.port), *extra]
        if self.catalog_url:
            args += ["--catalog", self.catalog_url]
        self.master.info = self.cli(self.master.home, *args, as_json=True)
        # Written directly rather than by two `settings set` processes: every cluster start pays for it.
        settings = load_master_settings(self.master.home)
        save_master_settings(
            self.master.home,
            dataclasses.replace(settings, console_address=self.host, console_port=self.console_port),
        )
        if self.fast:
            for key, value in FAST_MASTER_SETTINGS.items():
                self.cli(self.master.home, "settings", "set", "master", key, value, as_json=True)
        return self.master.info

    def start_master(self, *, wait: float = 30) -> Node:
        self._spawn(self.master, "master", "run", "--host", self.host)
        self.wait_for_master(wait)
        return self.master

    def console(self) -> tuple[str, int] | None:
        """Where this master's web console listens, as its settings say; None with ConsoleEnabled false."""
        settings = load_master_settings(self.master.home)
        return (settings.console_address, settings.console_port) if settings.console_enabled else None

    def master_pem(self) -> Path:
        """The master's public certificate as PEM (for ``ssl`` cafile), kept in step with master.cer."""
        cer, pem = self.master.home / "master.cer", self.root / "master.cer.pem"
        # Re-derived whenever master.cer changes: a master certificate rotation re-exports it.
        if not pem.exists() or pem.stat().st_mtime < cer.stat().st_mtime:
            from packfleet.pki import load_credential

            pem.write_bytes(load_credential(cer).cert_pem())
        return pem

    def health(self, timeout: float = 2.0) -> bool:
        """Whether the master answers ``/api/v1/health`` over TLS with its pinned certificate."""
        from packfleet.transport import client_context  # the one TLS policy; aiohttp only when used

        ctx = client_context(None, None, self.master_pem().read_text())
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=timeout)
        try:
            conn.request("GET", "/api/v1/health")
            return conn.getresponse().status == 200
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def wait_for_master(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master.process is not None and self.master.process.poll() is not None:
                raise ClusterError(
                    f"the master exited with {self.master.process.returncode}:\n{self.tail(self.master)}"
                )
            if self.health():
                return
            time.sleep(0.1)
        raise ClusterError(f"the master did not answer within {timeout:.0f} s:\n{self.tail(self.master)}")

    # -- workers ---------------------------------------------------------------------------

    def add_worker(
        self,
        name: str,
        ip: str,
        *,
        enable: bool = True,
        settings: dict[str, str] | None = None,
        masters: Sequence[str] = (),
    ) -> Node:
        """Connect a worker by hand, as the seed does: worker init with master.cer, then on the
        master ``manager worker add --cert worker.cer`` (and enable). ``masters`` lists every
        master's URL (several masters on one catalog); by default, this cluster's master."""
        node = Node(name, self.root / name)
        self.workers[name] = node
        urls = list(masters) or [f"https://{self.host}:{self.port}"]
        node.info = self.cli(
            node.home,
            "worker", "init",
            *(arg for url in urls for arg in ("--master", url)),
            "--master-cert", str(self.master.home / "master.cer"),
            "--name", name, "--ip", ip,
            as_json=True,
        )  # fmt: skip
        overrides = {**(FAST_WORKER_SETTINGS if self.fast else {}), **(settings or {})}
        for key, value in overrides.items():
            self.cli(node.home, "settings", "set", "worker", key, value, as_json=True)
        args = ["manager", "worker", "add", "--cert", str(node.home / "worker.cer"), "--name", name]
        self.cli(self.master.home, *args, *(["--enable"] if enable else []), as_json=True)
        return node

    def join_worker(self, name: str, ip: str, token: str, *, settings: dict[str, str] | None = None) -> Node:
        """Admit a worker with one command run on it: ``worker join TOKEN`` (a token from
        ``manager token create`` or ``manager worker connect --token``)."""
        node = self.workers.get(name) or Node(name, self.root / name)
        self.workers[name] = node
        node.info = self.cli(node.home, "worker", "join", token, "--name", name, "--ip", ip, as_json=True)
        overrides = {**(FAST_WORKER_SETTINGS if self.fast else {}), **(settings or {})}
        for key, value in overrides.items():
            self.cli(node.home, "settings", "set", "worker", key, value, as_json=True)
        return node

    def agent_id(self, name: str) -> str:
        return str(self.workers[name].info["agent_id"])

    def start_worker(self, name: str) -> Node:
        return self._spawn(self.workers[name], "worker", "run")

    def wait_for_workers(self, names: Sequence[str], *, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until each named worker has heartbeated (is known to the master and online)."""
        wanted = {self.agent_id(n) for n in names}
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.cli(self.master.home, "manager", "worker", "list", as_json=True) or []
            seen = {r["agent_id"] for r in rows if r.get("last_online_time")}
            if wanted <= seen:
                return rows
            time.sleep(0.2)
        raise ClusterError(
            f"workers {sorted(wanted)} did not connect within {timeout:.0f} s; master sees {rows}"
        )

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, node: Node, *args: str) -> Node:
        if node.running:
            raise ClusterError(
                f"{node.name} is already running (pid {node.process.pid if node.process else '?'})"
            )
        node.log_path = self.root / f"{node.name}.log"
        node._log = node.log_path.open("ab")
        node.process = subprocess.Popen(
            self.command(node.home, *args),
            stdout=node._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # a Ctrl+C in the terminal reaches the demo, not every node at once
            # ...so a node would outlive a demo or test run that is killed: it gets SIGTERM instead
            # (graceful, like close()). Start nodes from a thread that outlives them (prctl(2)).
            preexec_fn=functools.partial(die_with_parent, os.getpid(), signal.SIGTERM),
        )
        if self.echo:
            self.echo(
                f"started {node.name} (pid {node.process.pid}), "
                f"log: {_shorten(str(node.log_path), self.root)}"
            )
        return node

    def stop(self, node: Node, *, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """End a node's process by its PID; SIGKILL if it has not exited after ``timeout``."""
        proc = node.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if node._log is not None:
            node._log.close()
            node._log = None
        node.process = None
        return proc.returncode

    def kill(self, node: Node) -> None:
        """``kill -9`` a node (no clean-up on its side), as a crashed machine would be."""
        self.stop(node, sig=signal.SIGKILL, timeout=10)

    def tail(self, node: Node, lines: int = 40) -> str:
        if node.log_path is None or not node.log_path.exists():
            return "(no log)"
        return "\n".join(node.log_path.read_text(errors="replace").splitlines()[-lines:])

    def processes(self) -> Iterator[subprocess.Popen[bytes]]:
        for node in [self.master, *self.workers.values()]:
            if node.process is not None:
                yield node.process


def _shorten(text: str, root: Path) -> str:
    return text.replace(str(root), "$STATE")
