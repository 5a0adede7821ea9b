"""``packfleet dev``: a master and N workers on loopback in one command, as ``nomad agent -dev``.

Built on :class:`LocalCluster` (real processes, real certificates, short intervals) and the demo's
sample project. It prints the commands to try next, with the ``--home`` they need, then a ready
line, and stops every node it started on Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from packfleet.errors import ClusterError, UsageError
from packfleet.localcluster._cluster import LocalCluster, free_port, sigterm_exits

#: The line a script (or a test) waits for: everything after it is running and deployed.
READY = "packfleet dev: ready"
#: Seconds ``dev`` waits for the web console to accept connections before saying it did not start.
_CONSOLE_WAIT = 15.0
#: Seconds between checks that every node is still alive.
_WATCH_INTERVAL = 0.5


@dataclass(frozen=True)
class DevOptions:
    workers: int = 2
    host: str = "127.0.0.1"
    port: int | None = None
    home: Path | None = None


def sample_project() -> Path:
    """The sample ETL project, shipped inside the package so demo and dev run from an installed wheel."""
    candidate = Path(str(resources.files("packfleet") / "examples" / "etl"))
    if not (candidate / "packfleet.toml").is_file():
        raise ClusterError(
            f"the sample project is missing from this installation ({candidate})",
            fix="reinstall packfleet: pip install --force-reinstall packfleet",
        )
    return candidate


def _fresh_home(home: Path | None) -> Path:
    if home is None:
        return Path(tempfile.mkdtemp(prefix="packfleet-dev-"))
    if home.exists() and any(home.iterdir()):
        raise UsageError(
            f"{home} is not empty; packfleet dev starts a fresh cluster every time",
            fix=f"packfleet dev --home NEW_DIR  (or remove {home} first)",
        )
    home.mkdir(parents=True, exist_ok=True)
    return home


def _worker_ip(host: str, index: int) -> str:
    """Worker ``index`` (1-based) is named by a loopback address of its own, as in the demo."""
    if host.startswith("127."):
        return f"127.0.0.{1 + index}"
    return host


def console_lines(cluster: LocalCluster, *, wait: float = _CONSOLE_WAIT) -> list[str]:
    """Where the web console answers and how to add its first user; nothing when ConsoleEnabled is false.

    The port is the one this master was given (LocalCluster picks a free one, so several dev
    clusters, or a console already on 8392, never collide), read back from its settings. A
    console that cannot start is left out by the master, which says why in its log: this output
    then points there instead of printing a URL that does not answer.
    """
    console = cluster.console()
    if console is None:
        return []
    host, port = console
    if not _accepts(host, port, wait):
        return [f"  console   not started on {host}:{port}: see {cluster.master.log_path}"]
    home = cluster.master.home
    return [
        f"  console   https://{host}:{port}/  (the master's certificate; sign in as a console user)",
        f"            add one: printf '%s' \"$PASSWORD\" | packfleet --home {home} manager user add "
        "admin --role admin --password-stdin",
    ]


def _accepts(host: str, port: int, wait: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``wait`` seconds (polled)."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2.0):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def next_commands(cluster: LocalCluster) -> list[str]:
    """The commands to try, each with the ``--home`` of the master they administer."""
    home = cluster.master.home
    first = next(iter(cluster.workers), "worker1")
    return [
        f"packfleet --home {home} manager worker list",
        f"packfleet --home {home} run default/etl/load --wait",
        f"packfleet --home {home} run default/etl/load --worker {first} --wait",
        f"packfleet --home {home} executions list",
        f"packfleet --home {home} manager audit",
    ]


def run_dev(options: DevOptions, say: Callable[[str], None]) -> int:
    """Start the cluster, print how to use it, and keep it up until SIGINT or SIGTERM."""
    if not 1 <= options.workers <= 16:
        raise UsageError(f"--workers {options.workers}: a dev cluster has 1 to 16 workers", fix="--workers 2")
    root = _fresh_home(options.home)
    port = options.port or free_port(options.host)
    project = sample_project()
    say(f"packfleet dev: state in {root}")
    with sigterm_exits(), LocalCluster(root, host=options.host, port=port) as cluster:
        try:
            cluster.init_master()
            cluster.start_master()
            say(f"  master    https://{options.host}:{port}  (pid {_pid(cluster, 'master')})")
            names = [f"worker{i}" for i in range(1, options.workers + 1)]
            for index, name in enumerate(names, start=1):
                cluster.add_worker(name, _worker_ip(options.host, index))
                cluster.start_worker(name)
            cluster.wait_for_workers(names, timeout=60)
            for name in names:
                say(f"  {name:<9} {cluster.agent_id(name)}  (pid {_pid(cluster, name)})")
            cluster.cli(cluster.master.home, "deploy", str(project), as_json=True)
            say(f"  deployed  default/etl (from {project})")
        except ClusterError as exc:
            say(f"packfleet dev: could not start: {exc}")
            for node in [cluster.master, *cluster.workers.values()]:
                say(f"--- {node.name} log (last lines)\n{cluster.tail(node)}")
            return 1
        for line in console_lines(cluster):
            say(line)
        say("\nTry:")
        for command in next_commands(cluster):
            say(f"  {command}")
        say(f"Logs: {root}/*.log   Stop: Ctrl+C (or SIGTERM)")
        say(READY)
        try:
            return _watch(cluster, say)
        except KeyboardInterrupt:
            say("packfleet dev: stopping (Ctrl+C)")
            return 0
        except SystemExit:
            say("packfleet dev: stopping (SIGTERM)")
            return 0


def _pid(cluster: LocalCluster, name: str) -> int:
    node = cluster.master if name == "master" else cluster.workers[name]
    return node.process.pid if node.process is not None else 0


def _watch(cluster: LocalCluster, say: Callable[[str], None]) -> int:
    """Keep running while every node runs; a node that dies ends the dev cluster, with its log."""
    while True:
        for node in [cluster.master, *cluster.workers.values()]:
            if node.process is not None and node.process.poll() is not None:
                say(f"packfleet dev: {node.name} exited with {node.process.returncode}; stopping")
                say(cluster.tail(node))
                return 1
        time.sleep(_WATCH_INTERVAL)
