"""A systemd unit for the master, as SSIS setup registers the SSISScaleOutMaster service.

``ExecReload`` sends SIGHUP, which reloads settings, binding and stores without dropping
connections; ``Restart=on-failure`` brings a crashed master back; the sandbox (``packfleet._systemd``,
the same as the worker's) keeps the service to its home (the only place it writes: catalog, stores,
settings).
"""

from __future__ import annotations

from pathlib import Path

from packfleet import _systemd

SERVICE_NAME = "packfleet-master"


def systemd_unit(home: Path, *, user: str | None = None, executable: str | None = None) -> str:
    """The text of ``packfleet-master.service`` running ``packfleet --home HOME master run``."""
    service = _systemd.service_section(
        home, "master", user=user, command=[executable] if executable else None
    )
    lines = [
        "[Unit]",
        "Description=packfleet master (SSIS Scale Out master for Linux)",
        "After=network-online.target postgresql.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        *service,
        # SIGTERM lets requests in flight finish; give that (and the catalog close) time.
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def enable_hint(unit_path: Path) -> str:
    """What to run after writing the unit."""
    return _systemd.enable_hint(unit_path, SERVICE_NAME)
