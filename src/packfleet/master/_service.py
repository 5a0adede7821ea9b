"""A systemd unit for the master, as SSIS setup registers the SSISScaleOutMaster service.

``ExecReload`` sends SIGHUP, which reloads settings, binding and stores without dropping
connections; ``Restart=on-failure`` brings a crashed master back; the hardening options keep the
service to its home (the only place it writes: catalog, stores, settings).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

SERVICE_NAME = "packfleet-master"


def _executable() -> str:
    found = shutil.which("packfleet")
    if found:
        return found
    return f"{sys.executable} -m packfleet"


def systemd_unit(home: Path, *, user: str | None = None, executable: str | None = None) -> str:
    """The text of ``packfleet-master.service`` running ``packfleet --home HOME master run``."""
    command = executable or _executable()
    home_arg = shlex.quote(str(home))
    lines = [
        "[Unit]",
        "Description=packfleet master (SSIS Scale Out master for Linux)",
        "After=network-online.target postgresql.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={command} --home {home_arg} master run",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5",
        # SIGTERM lets requests in flight finish; give that (and the catalog close) time.
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
    ]
    if user:
        lines += [f"User={user}", f"Group={user}"]
    lines += [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={home_arg}",
        # read-only, not yes: ReadWritePaths can reopen a CurrentUser home under /home, not a hidden one.
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "UMask=0077",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def enable_hint(unit_path: Path) -> str:
    """What to run after writing the unit."""
    return (
        f"installed {unit_path}; enable and start it with:\n"
        f"  systemctl daemon-reload && systemctl enable --now {SERVICE_NAME}\n"
        f"reload settings, binding and certificates later with: systemctl reload {SERVICE_NAME}"
    )
