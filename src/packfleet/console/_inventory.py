"""The fleet's certificate inventory, cached for the dashboard and the Certificates page.

Building it reads every certificate file of the master's Root store and every worker certificate
of the catalog: far too slow for each page view of a fleet of a thousand workers. Every change to
a fleet certificate (add, bind, revoke, delete, rotation, a worker renamed) writes the audit log,
so the cache is keyed on the newest audit row, the certificate the master serves and the rotation
under way: any of them moving rebuilds it at the next view, on this master or another one of the
catalog. What the audit log does not see (a certificate imported into the Root store by hand) and
the days left, which shrink by the hour, are caught by a short time to live.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from packfleet.console._fleet import Fleet

#: The longest an inventory is served unchanged, in seconds.
TTL_SECONDS = 30.0


class CertificateInventory:
    """``await entries(fleet)``: the inventory, rebuilt only when it may have changed."""

    def __init__(self, ttl: float = TTL_SECONDS) -> None:
        self._ttl = ttl
        self._key: tuple[Any, ...] | None = None
        self._built_at = 0.0
        self._entries: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self.builds = 0  # how many times it was built (tests see the cache work)

    def invalidate(self) -> None:
        """Build again at the next view (after a change this console made itself)."""
        self._key = None

    async def entries(self, fleet: Fleet) -> list[dict[str, Any]]:
        """Each entry a fresh dict (pages may add keys), with ``worker_name`` for bound ones."""
        async with self._lock:  # one build at a time: a burst of views after a change builds once
            facts = fleet.facts()
            key = (await fleet.db(fleet.catalog.last_audit_id), facts.serving_thumbprint, facts.rotation)
            if key != self._key or time.monotonic() - self._built_at > self._ttl:
                entries = await fleet.certificates()
                names = {agent: name for agent, name, _, _ in await fleet.db(fleet.catalog.worker_names)}
                for entry in entries:
                    for field in ("worker", "name", "status", "sha256", "warning", "days_left", "not_after"):
                        entry.setdefault(field, None)
                    entry["worker_name"] = names.get(entry["worker"] or "", "")
                entries.sort(key=lambda e: (e["days_left"] is None, e["days_left"] or 0.0))
                self._entries, self._key, self._built_at = entries, key, time.monotonic()
                self.builds += 1
            return [dict(entry) for entry in self._entries]


INVENTORY: web.AppKey[CertificateInventory] = web.AppKey("packfleet_console_inventory", CertificateInventory)


def inventory_of(request: web.Request) -> CertificateInventory:
    return request.app[INVENTORY]
