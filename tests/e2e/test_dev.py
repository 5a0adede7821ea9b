"""``packfleet dev`` as a person runs it: a subprocess, its ready line, its printed commands, SIGTERM."""

from __future__ import annotations

import http.client
import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from packfleet.config import load_master_settings
from packfleet.localcluster import READY, free_port
from packfleet.pki import load_credential

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


def _console_request(
    conn: http.client.HTTPSConnection,
    cookies: dict[str, str],
    method: str,
    path: str,
    form: dict[str, str] | None = None,
) -> tuple[int, str]:
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=urllib.parse.urlencode(form) if form else None, headers=headers)
    response = conn.getresponse()
    for raw in response.headers.get_all("Set-Cookie") or []:
        name, _, rest = raw.partition("=")
        cookies[name] = rest.split(";", 1)[0]
    return response.status, response.read().decode()


def _sign_in_to_console(port: int, master_home: Path, hint: str, env: dict[str, str]) -> None:
    """The console answers over HTTPS with the master's certificate and no client certificate,
    and the printed hint adds a user who can sign in."""
    # Server-only TLS: the master's certificate as the one trust anchor, no client certificate.
    context = ssl.create_default_context(
        cadata=load_credential(master_home / "master.cer").cert_pem().decode()
    )
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    cookies: dict[str, str] = {}
    try:
        status, page = _console_request(conn, cookies, "GET", "/login")
        assert status == 200, page[:300]
        password = "dev-console-password"  # noqa: S105 - a throwaway cluster's user
        added = subprocess.run(
            [sys.executable, "-m", *shlex.split(hint)],
            input=password,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert added.returncode == 0, added.stdout + added.stderr
        token = re.search(r'name="csrf-token" content="([^"]*)"', page)
        assert token is not None, page[:300]
        form = {"csrf_token": token.group(1), "username": "admin", "password": password, "next": "/"}
        status, text = _console_request(conn, cookies, "POST", "/login", form)
        assert status == 303, text[:300]
    finally:
        conn.close()


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
        # ConsoleEnabled is true by default: the console's own free port, never the fixed 8392.
        found = re.search(r"console +https://127\.0\.0\.1:(\d+)/", out)
        assert found is not None, out
        console_port = int(found.group(1))
        assert console_port not in (port, 8392)
        assert console_port == load_master_settings(home / "master").console_port
        hint = next(line for line in lines if "add one:" in line).split("| ", 1)[1]
        assert f"--home {home / 'master'} manager user add" in hint
        _sign_in_to_console(console_port, home / "master", hint, env)
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
