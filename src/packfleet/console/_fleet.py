"""What the console needs from the master it runs in, as a protocol the master implements.

The console reads through the catalog facade and changes the fleet only through these calls, which
are the very functions the admin API uses: disabling a worker here also closes its connections and
wakes the long-polls, exactly as ``packfleet manager worker disable`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, Protocol, TypeVar

from packfleet.catalog import Catalog, ExecutionRecord, WorkerRecord
from packfleet.pki import Credential

P = ParamSpec("P")
T = TypeVar("T")


class EventTicket(Protocol):
    """A wake-up taken before looking for news: ``wait`` returns once there may be some."""

    async def wait(self, timeout: float) -> bool: ...


@dataclass(frozen=True)
class MasterFacts:
    """What the dashboard says about the master serving it."""

    address: str
    version: str
    started_at: datetime
    serving_thumbprint: str
    #: e.g. ``"announced: 0A1B... -> 9F8E..."`` while a master certificate rotation runs, else None.
    rotation: str | None


class Fleet(Protocol):
    """The master as the console sees it."""

    @property
    def catalog(self) -> Catalog: ...

    @property
    def closing(self) -> bool: ...

    def now(self) -> datetime: ...

    def facts(self) -> MasterFacts: ...

    async def db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...

    def event_ticket(self) -> EventTicket: ...

    async def set_worker_enabled(
        self, agent_id: str, enabled: bool, *, actor: str, reason: str | None
    ) -> WorkerRecord: ...

    async def delete_worker(self, agent_id: str, *, actor: str) -> dict[str, Any]: ...

    async def cancel_execution(self, execution_id: int, *, actor: str) -> ExecutionRecord: ...

    async def shown_execution(self, record: ExecutionRecord) -> dict[str, Any]: ...

    async def certificates(self) -> list[dict[str, Any]]: ...

    async def update_worker(
        self, agent_id: str, *, actor: str, description: str | None, tags: str | None
    ) -> WorkerRecord: ...

    def worker_certificate(self, data: bytes) -> Credential:
        """``data`` (PEM or DER) checked as a worker's client certificate; raises PackfleetError."""
        ...

    async def stored_certificate(self, thumbprint: str) -> bytes:
        """A certificate already in the master's stores, by thumbprint; raises CertificateNotFound."""
        ...

    async def trust_worker(
        self, public: Credential, *, actor: str, display_name: str | None, enable: bool
    ) -> str: ...

    async def create_join_token(self, *, actor: str, ttl_seconds: float, enable: bool) -> dict[str, Any]: ...

    async def run_package(
        self,
        folder: str,
        project: str,
        package: str,
        *,
        parameters: dict[str, Any],
        workers: tuple[str, ...],
        actor: str,
    ) -> ExecutionRecord: ...

    async def rerun_execution(
        self, execution_id: int, *, actor: str
    ) -> tuple[ExecutionRecord, ExecutionRecord]:
        """A new execution of the same package, parameters and allowed workers; (old, new)."""
        ...

    async def rotation_status(self) -> dict[str, Any] | None:
        """The master certificate rotation under way, with each worker's progress (the admin route
        GET /rotation/master-cert's answer); None when none is under way."""
        ...

    async def rotate_master_certificate(
        self, action: str, *, actor: str, force: bool = False
    ) -> dict[str, Any]:
        """One step of a master certificate rotation: ``start``, ``switch``, ``finish`` or ``abort``,
        audited under ``actor``; raises Conflict when the step does not apply now."""
        ...
