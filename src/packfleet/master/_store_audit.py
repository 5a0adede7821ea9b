"""Audit the master's Root store changes that the catalog did not make itself.

``packfleet cert import/delete`` on the master machine edit ``<home>/certs/Root`` directly (the seed's
"install the client certificate into the Root store of the master machine" is such a step); the CLI
cannot reach the catalog from there, and on PostgreSQL may not be allowed to. The master notices
every such edit when it reloads (SIGHUP or its file watcher), because the Root store is what it
trusts; so it is the master that writes ``store.change`` to the audit log, with the thumbprints added
and removed since the trust it served before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from packfleet.pki import CertStore


def root_thumbprints(home: Path) -> frozenset[str]:
    """The thumbprints in the master's Root store now."""
    return frozenset(CertStore(home, "Root").thumbprints())


def store_change(before: frozenset[str], after: frozenset[str]) -> dict[str, Any] | None:
    """``{"store": "Root", "added": [...], "removed": [...]}``, or None when nothing changed."""
    if before == after:
        return None
    return {"store": "Root", "added": sorted(after - before), "removed": sorted(before - after)}
