"""A systemd unit for the worker, the Linux counterpart of SSIS's ``SSISScaleOutWorker140`` service.

Built like the master's (``packfleet._systemd``: same command line, same flags, same sandbox); what
differs is how it stops, because a worker has packages running:

- ``KillMode=mixed``: ``systemctl stop`` sends SIGTERM to the agent only, which stops leasing and
  lets running packages finish for its grace period before cancelling them itself; the final SIGKILL
  still reaches the whole cgroup after ``TimeoutStopSec``.
- ``TimeoutStopSec=90`` leaves room for that grace (30 s), the packages' own SIGTERM grace and a last
  flush of the log cache.

Packages run inside the worker's sandbox: they may write in the home (their task folders) and in
``TasksRootFolder``/``ExecutionLogCacheFolder`` when those are elsewhere; a package that writes to
other places needs them added (``systemctl edit packfleet-worker``: ``ReadWritePaths=...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from packfleet import _systemd

SERVICE_NAME = "packfleet-worker"
UNIT_NAME = f"{SERVICE_NAME}.service"


def render_unit(
    home: Path,
    *,
    user: str | None = None,
    executable: str | None = None,
    writable: Sequence[Path] = (),
) -> str:
    """The unit text that runs ``packfleet --home HOME worker run`` (as ``user``, when given)."""
    service = _systemd.service_section(
        home, "worker", user=user, command=[executable] if executable else None, writable=writable
    )
    lines = [
        "[Unit]",
        "Description=packfleet worker (SSIS Scale Out worker for Linux)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        *service,
        "KillMode=mixed",
        "TimeoutStopSec=90",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def enable_hint(unit_path: Path) -> str:
    """What to run after writing the unit."""
    return _systemd.enable_hint(unit_path, SERVICE_NAME)
