"""``packfleet dev`` as a person runs it: a subprocess, its ready line, its printed commands, SIGTERM."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from packfleet.localcluster import READY, free_port

pytestmark = pytest.mark.e2e

_READY_TIMEOUT = 240.0


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (children, grandchildren...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_dev_runs_a_cluster_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "dev"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKFLEET_")}
    env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "80"})
    argv = [
        sys.executable,
        "-m",
        "packfleet",
        "dev",
        "--workers",
        "2",
        "--port",
        str(port),
        "--home",
        str(home),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.strip() == READY:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(_READY_TIMEOUT), "no ready line:\n" + "\n".join(lines)
        out = "\n".join(lines)
        assert f"https://127.0.0.1:{port}" in out
        assert "console" not in out  # ConsoleEnabled is not set
        commands = [line.strip() for line in lines if line.strip().startswith("packfleet --home ")]
        assert all(f"--home {home / 'master'}" in c for c in commands)
        run = next(c for c in commands if " run " in c and "--worker" in c)
        done = subprocess.run(
            [sys.executable, "-m", *shlex.split(run)],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "succeeded" in done.stdout
        listing = next(c for c in commands if c.endswith("manager worker list"))
        workers = subprocess.run(
            [sys.executable, "-m", *shlex.split(listing)], capture_output=True, text=True, env=env, timeout=60
        )
        assert workers.stdout.count("online") == 2, workers.stdout

        descendants = _children(proc.pid)
        assert len(descendants) >= 3  # the master and two workers, at least
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in descendants):
            time.sleep(0.2)
        assert not [p for p in descendants if _alive(p)], "child processes outlived packfleet dev"
        reader.join(timeout=10)
        assert "stopping (SIGTERM)" in "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
