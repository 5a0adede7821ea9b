"""The master certificate rotation as a service: the admin route, the heartbeats and the console
reach :class:`~packfleet.master._rotation.MasterCertRotation` only through it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from packfleet.errors import InvalidValue, PkiError
from packfleet.master._rotation import MasterCertRotation
from packfleet.master._services._base import CatalogOnlyState
from packfleet.master._state import MasterState, RotationView
from packfleet.pki import classify_name
from packfleet.protocol import HeartbeatReply

#: The steps an administrator may ask for, in their order.
ACTIONS = ("start", "switch", "finish", "abort")


class RotationService:
    """Start, switch, finish or abort a rotation; what the workers accept; the heartbeat hook.

    The rotation's own code sends its blocking work through ``state.db``; it is given a state whose
    ``db`` keeps only catalog calls on the catalog's executor, so generating the next key and
    rewriting the binding, settings and stores never hold up leases and heartbeats on SQLite.
    """

    def __init__(
        self,
        state: MasterState,
        *,
        serving: Callable[[], str],
        reload: Callable[[], Awaitable[None]],
        paused: Callable[[], AbstractAsyncContextManager[None]],
    ) -> None:
        self.rotation = MasterCertRotation(
            CatalogOnlyState(state),  # type: ignore[arg-type]  # the state, with db split by kind
            serving=serving,
            reload=reload,
            paused=paused,
        )

    async def load(self) -> None:
        await self.rotation.load()

    @property
    def record(self) -> RotationView | None:
        """The rotation under way, if any (the console's banner shows it)."""
        return self.rotation.record

    def on_heartbeat(self, agent_id: str, accepted: list[str], reply: HeartbeatReply) -> HeartbeatReply:
        return self.rotation.on_heartbeat(agent_id, accepted, reply)

    def needs_heartbeat(self, agent_id: str) -> bool:
        return self.rotation.needs_heartbeat(agent_id)

    async def status(self, *, wait_for: str | None = None, wait: float = 0.0) -> dict[str, Any]:
        return await self.rotation.status(wait_for=wait_for, wait=wait)

    async def advance(
        self,
        action: str,
        *,
        actor: str,
        cns: list[str] | None = None,
        days: int | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Take step ``action``; bad names or days raise :class:`InvalidValue` before anything changes."""
        if action == "start":
            if days is not None and not 1 <= days <= 3650:
                raise InvalidValue(f"days {days} is out of range 1..3650")
            for name in cns or []:
                try:
                    classify_name(name)
                except PkiError as exc:  # the caller's name, not the master's own PKI (a 500)
                    raise InvalidValue(exc.message, fix=exc.fix) from None
            return await self.rotation.start(cns=list(cns or []), days=days, actor=actor)
        if action == "switch":
            return await self.rotation.switch(actor=actor, force=force)
        if action == "finish":
            return await self.rotation.finish(actor=actor)
        if action == "abort":
            return await self.rotation.abort(actor=actor)
        raise InvalidValue(f"action {action!r} is not one of {', '.join(ACTIONS)}")
