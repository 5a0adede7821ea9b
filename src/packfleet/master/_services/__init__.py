"""The master's domain services: each call sequence of the admin operations, in one place.

The aiohttp handlers (``_admin_api``, ``_join_api``, ``_fleet``...) parse a request, call one
service and render its answer; the web console's :class:`~packfleet.master._console.MasterFleet`
calls the same services. Services return catalog records (or plain data where there is no record);
rendering them for the wire is the handlers' job.

Blocking work runs where it belongs: catalog calls on the catalog's executor (``state.db``), other
blocking work (key generation, TLS material, certificate stores and settings files) on threads of
its own (:func:`off_catalog`), so it never queues ahead of leases and heartbeats on SQLite's one
catalog thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from packfleet.master._services._base import CatalogOnlyState, off_catalog
from packfleet.master._services._executions import (
    EVENTS_LIMIT,
    EventPage,
    ExecutionService,
    Manifests,
    ProjectService,
    Submitted,
)
from packfleet.master._services._fleet import AuditService, FleetService
from packfleet.master._services._identities import IdentityService
from packfleet.master._services._joins import Connected, JoinService
from packfleet.master._services._pending import PendingService
from packfleet.master._services._renewal import RenewalService
from packfleet.master._services._rotation import RotationService
from packfleet.master._services._tokens import NewToken, TokenService, token_view
from packfleet.master._services._workers import TrustService, WorkerService
from packfleet.master._state import Call, MasterState


@dataclass(frozen=True)
class Services:
    """One master's services, built once at start and shared by its routes and its console."""

    workers: WorkerService
    trust: TrustService
    executions: ExecutionService
    projects: ProjectService
    tokens: TokenService
    audit: AuditService
    fleet: FleetService
    identities: IdentityService
    joins: JoinService
    renewal: RenewalService
    pending: PendingService
    #: None where no rotation can run (an application built without a server, in tests).
    rotation: RotationService | None = None

    @classmethod
    def build(
        cls,
        state: MasterState,
        *,
        serving: Callable[[], tuple[str, str] | None] = lambda: None,
        rotation: RotationService | None = None,
    ) -> Services:
        return cls(
            workers=WorkerService(state),
            trust=TrustService(state),
            executions=ExecutionService(state),
            projects=ProjectService(state),
            tokens=TokenService(state),
            audit=AuditService(state),
            fleet=FleetService(state, serving),
            identities=IdentityService(state),
            joins=JoinService(state),
            renewal=RenewalService(state),
            pending=PendingService(state),
            rotation=rotation,
        )

    def require_rotation(self) -> RotationService:
        if self.rotation is None:
            raise RuntimeError("this master runs no certificate rotation (built without a server)")
        return self.rotation


#: Where the application keeps its services; handlers reach them with :func:`services_of`.
SERVICES: web.AppKey[Services] = web.AppKey("packfleet_master_services", Services)


def services_of(call: Call) -> Services:
    """The services of the master answering ``call``."""
    return call.request.app[SERVICES]


__all__ = [
    "SERVICES",
    "EVENTS_LIMIT",
    "AuditService",
    "CatalogOnlyState",
    "Connected",
    "EventPage",
    "ExecutionService",
    "FleetService",
    "IdentityService",
    "JoinService",
    "Manifests",
    "NewToken",
    "PendingService",
    "ProjectService",
    "RenewalService",
    "RotationService",
    "Services",
    "Submitted",
    "TokenService",
    "TrustService",
    "WorkerService",
    "off_catalog",
    "services_of",
    "token_view",
]
