"""The audit log and the fleet's certificate inventory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from packfleet.catalog import AuditRecord
from packfleet.master._fleet import fleet_certificates
from packfleet.master._state import MasterState


class AuditService:
    def __init__(self, state: MasterState) -> None:
        self._state = state

    async def list(self, *, limit: int, after_id: int = 0, newest: bool = False) -> list[AuditRecord]:
        """Entries after ``after_id``, oldest first; with ``newest``, the last ``limit`` of them."""
        return await self._state.db(
            self._state.catalog.list_audit, limit=limit, after_id=after_id, newest=newest
        )


class FleetService:
    """Every fleet certificate (master, admin, workers) with its days left and warning level."""

    def __init__(self, state: MasterState, serving: Callable[[], tuple[str, str] | None]) -> None:
        self._state = state
        self._serving = serving

    async def certificates(self) -> list[dict[str, Any]]:
        """Each with ``days_left`` and ``warning`` (None, "30d", "7d", "expired")."""
        return await fleet_certificates(self._state, self._serving())
