"""What the master's and the worker's systemd units share: the command line, quoting and hardening.

Both services get the same sandbox (SSIS registers both as services of their own account): no new
privileges, the whole file system read-only except the node's home (and folders its settings put
elsewhere), no devices, no kernel tunables, only IP and Unix sockets, files made private (umask 077).
One list here, so that the two units cannot drift apart.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

#: The sandbox of both units, in the order they are written.
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
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
)

UNIT_FOLDER = Path("/etc/systemd/system")


def quote(word: str) -> str:
    """One word of ``ExecStart=``/``ReadWritePaths=`` as systemd.service(5) parses it.

    >>> quote("/srv/packfleet"), quote("/srv/my home"), quote("50%")
    ('/srv/packfleet', '"/srv/my home"', '"50%%"')
    """
    if word and not any(c in word for c in " \t\"'\\$%;"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%") + '"'


def executable() -> list[str]:
    """How to start packfleet: the ``packfleet`` script on PATH, else this interpreter with ``-m``."""
    found = shutil.which("packfleet")
    return [found] if found else [sys.executable, "-m", "packfleet"]


def service_section(
    home: Path,
    role: str,
    *,
    user: str | None,
    command: Sequence[str] | None = None,
    writable: Sequence[Path] = (),
) -> list[str]:
    """``ExecStart``, ``ExecReload``, the account and the sandbox of the master or worker ``run`` command."""
    words = [*(command or executable()), "--home", str(home), role, "run"]
    lines = [
        "Type=exec",
        "ExecStart=" + " ".join(quote(w) for w in words),
        # SIGHUP re-reads settings and certificates without dropping connections or tasks.
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5",
    ]
    if user:
        lines += [f"User={user}", f"Group={user}"]
    paths = [home, *(p for p in writable if p != home and home not in p.parents)]
    lines += [*HARDENING[:2], "ReadWritePaths=" + " ".join(quote(str(p)) for p in paths), *HARDENING[2:]]
    return lines


def enable_hint(unit_path: Path, service: str) -> str:
    """What to run after writing a unit."""
    return (
        f"installed {unit_path}; enable and start it with:\n"
        f"  systemctl daemon-reload && systemctl enable --now {service}\n"
        f"reload settings and certificates later with: systemctl reload {service}"
    )
