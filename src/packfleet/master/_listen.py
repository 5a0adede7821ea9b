"""``<home>/master.listen``: the address a running master really listens on, for ``doctor``.

``master run --host`` and ``--port`` can differ from MasterSettings.config (PortNumber) and from
127.0.0.1, so a probe of the settings' port on 127.0.0.1 may miss the master or find another
process. The master writes where it listens (and its pid) once it does, and removes the file
when it stops; a file whose pid is gone is stale and ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from packfleet._files import atomic_replace

LISTEN_FILE = "master.listen"
_WILDCARDS = {"", "0.0.0.0", "::", "*"}  # noqa: S104 - names of the wildcard, not a bind


@dataclass(frozen=True)
class Listening:
    host: str
    port: int
    pid: int

    @property
    def probe_host(self) -> str:
        """Where to connect to reach it: loopback when it listens on every address."""
        if self.host in _WILDCARDS:
            return "::1" if self.host == "::" else "127.0.0.1"
        return self.host


def write_listening(home: Path, host: str, port: int) -> None:
    data = json.dumps({"host": host, "port": port, "pid": os.getpid()}) + "\n"
    with contextlib.suppress(OSError):  # a read-only home must not stop the master from serving
        atomic_replace(home / LISTEN_FILE, data.encode(), 0o644)


def remove_listening(home: Path) -> None:
    path = home / LISTEN_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def read_listening(home: Path) -> Listening | None:
    """Where the master of ``home`` listens, or None when none runs (no file, or a stale one)."""
    try:
        raw = json.loads((home / LISTEN_FILE).read_text())
        found = Listening(str(raw["host"]), int(raw["port"]), int(raw["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, run by another account (the service user)
    return found
