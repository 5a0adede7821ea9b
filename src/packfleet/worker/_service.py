"""A systemd unit for the worker, the Linux counterpart of SSIS's ``SSISScaleOutWorker140`` service."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

UNIT_NAME = "packfleet-worker.service"


def _quote(word: str) -> str:
    """Quote one ExecStart word the way systemd.service(5) parses it (C-style double quotes)."""
    if word and not any(c in word for c in " \t\"'\\$%;"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%") + '"'


def render_unit(home: Path, *, user: str, python: str | None = None) -> str:
    """The unit text that runs ``packfleet --home HOME worker run`` as ``user``.

    - ``KillMode=mixed``: ``systemctl stop`` sends SIGTERM to the agent only, which stops leasing
      and lets running packages finish for its grace period before cancelling them itself; the
      final SIGKILL still reaches the whole cgroup after ``TimeoutStopSec``.
    - ``TimeoutStopSec=90`` leaves room for that grace (30 s), the packages' own SIGTERM grace and a
      last flush of the log cache.
    - ``ExecReload`` sends SIGHUP: settings and certificates are re-read without dropping tasks.
    - ``Restart=on-failure``: a worker that lost its master keeps its log cache on disk and
      replays it after the restart.
    """
    interpreter = python or sys.executable
    command = " ".join(
        _quote(w) for w in (interpreter, "-m", "packfleet", "--home", str(home), "worker", "run")
    )
    return (
        "[Unit]\n"
        f"Description=packfleet Scale Out Worker ({home})\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"User={user}\n"
        f"ExecStart={command}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "KillMode=mixed\n"
        "TimeoutStopSec=90\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def install_hint(path: Path | None) -> str:
    """What to run after writing the unit (to ``path``, or printed for the user to place)."""
    target = path or Path("/etc/systemd/system") / UNIT_NAME
    return f"sudo systemctl daemon-reload && sudo systemctl enable --now {shlex.quote(target.stem)}"
