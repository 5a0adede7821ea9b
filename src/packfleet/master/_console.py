"""The master's side of the web console: the :class:`packfleet.console.Fleet` it hands the console,
and the console certificate (``ConsoleCertThumbprint``, else the master's own)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from packfleet import __version__
from packfleet.catalog import Catalog, ExecutionRecord, WorkerRecord
from packfleet.config import load_manager_settings, set_setting
from packfleet.console import EventTicket, MasterFacts
from packfleet.errors import CertificateNotFound, SettingsError
from packfleet.master._services import RotationService, Services, off_catalog
from packfleet.master._state import MasterState
from packfleet.master._tls import TlsMaterial
from packfleet.master._wakeup import EVENTS
from packfleet.pki import CertStore, Credential
from packfleet.transport import console_server_context

P = ParamSpec("P")
T = TypeVar("T")


class MasterFleet:
    """The running master as the console sees it: the services the admin routes call, nothing copied."""

    def __init__(
        self,
        state: MasterState,
        services: Services,
        *,
        started_at: datetime,
        address: Callable[[], str],
        serving: Callable[[], tuple[str, str] | None],
    ) -> None:
        self._state = state
        self._services = services
        self._started_at = started_at
        self._address = address
        self._serving = serving

    @property
    def catalog(self) -> Catalog:
        return self._state.catalog

    @property
    def closing(self) -> bool:
        return self._state.closing

    def now(self) -> datetime:
        return self._state.clock()

    def facts(self) -> MasterFacts:
        serving = self._serving()
        rotation = self._services.rotation.record if self._services.rotation is not None else None
        return MasterFacts(
            address=self._address(),
            version=__version__,
            started_at=self._started_at,
            serving_thumbprint=serving[0] if serving else "",
            rotation=f"{rotation.phase}: {rotation.old} -> {rotation.new}" if rotation is not None else None,
        )

    async def db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._state.db(call, *args, **kwargs)

    def event_ticket(self) -> EventTicket:
        return self._state.wakeups.ticket(EVENTS)

    async def set_worker_enabled(
        self, agent_id: str, enabled: bool, *, actor: str, reason: str | None
    ) -> WorkerRecord:
        return await self._services.workers.set_enabled(agent_id, enabled, actor=actor, reason=reason)

    async def delete_worker(self, agent_id: str, *, actor: str) -> dict[str, Any]:
        return await self._services.workers.delete(agent_id, actor=actor)

    async def cancel_execution(self, execution_id: int, *, actor: str) -> ExecutionRecord:
        return await self._services.executions.cancel(execution_id, actor=actor)

    async def shown_execution(self, record: ExecutionRecord) -> dict[str, Any]:
        return await self._services.executions.shown(record)

    async def certificates(self) -> list[dict[str, Any]]:
        return await self._services.fleet.certificates()

    async def update_worker(
        self, agent_id: str, *, actor: str, description: str | None, tags: str | None
    ) -> WorkerRecord:
        return await self._services.workers.update(agent_id, actor=actor, description=description, tags=tags)

    def worker_certificate(self, data: bytes) -> Credential:
        """A worker certificate checked as ``manager worker add`` checks it (public part only)."""
        return self._services.trust.worker_certificate(data)

    async def stored_certificate(self, thumbprint: str) -> bytes:
        """The certificate ``thumbprint`` from the master's Root or My store (PEM): store files, read
        off the catalog's executor (and off the event loop)."""
        return await self._services.trust.stored_certificate(thumbprint)

    async def trust_worker(
        self, public: Credential, *, actor: str, display_name: str | None, enable: bool
    ) -> str:
        """What the admin route POST /workers does: record the certificate, trust it; its thumbprint."""
        record = await self._services.trust.add_worker_certificate(
            public, actor=actor, display_name=display_name, enable=enable
        )
        return record.thumbprint

    async def create_join_token(self, *, actor: str, ttl_seconds: float, enable: bool) -> dict[str, Any]:
        """What the admin route POST /tokens does, for one use: the token string and when it expires."""
        made = await self._services.tokens.create(
            actor=actor, ttl_seconds=ttl_seconds, enable=enable, default_endpoint=self._address()
        )
        return {"token": made.token, "expires_at": made.record.expires_at, "endpoint": made.record.endpoint}

    async def run_package(
        self,
        folder: str,
        project: str,
        package: str,
        *,
        parameters: dict[str, Any],
        workers: tuple[str, ...],
        actor: str,
    ) -> ExecutionRecord:
        """What the admin route POST /executions does: parameters typed and sealed, queued, woken."""
        return await self._services.executions.run_package(
            folder, project, package, parameters=parameters, workers=workers, actor=actor
        )

    async def rerun_execution(
        self, execution_id: int, *, actor: str
    ) -> tuple[ExecutionRecord, ExecutionRecord]:
        """A new execution with the old one's parameters (sensitive ones opened and sealed afresh)."""
        return await self._services.executions.rerun(execution_id, actor=actor)

    # --- master certificate rotation, for the console's Certificates page -----------------------
    # Only calls into the RotationService, which the admin route POST /rotation/master-cert drives
    # too: the console starts, switches, finishes and aborts exactly as the CLI does.

    def _rotation(self) -> RotationService:
        return self._services.require_rotation()

    async def rotation_status(self) -> dict[str, Any] | None:
        rotation = self._rotation()
        if rotation.record is None:
            return None  # no list of every worker for a rotation that is not there
        return await rotation.status()

    async def rotate_master_certificate(
        self, action: str, *, actor: str, force: bool = False
    ) -> dict[str, Any]:
        # The service refuses an unknown step (InvalidValue) before anything changes.
        result = await self._rotation().advance(action, actor=actor, force=force)
        # Settings files, not the catalog: off the catalog's executor.
        await off_catalog(_follow_local_manager, self._state.home, action, result)
        return result


def _follow_local_manager(home: Path, action: str, result: dict[str, Any]) -> None:
    """Keep the manager of the master's own home pinned through a rotation made in the console.

    ``packfleet manager rotate master-cert`` re-pins the manager it runs as (Next pin at start, the
    new one after the switch); a rotation started in a browser has no CLI to do that, and the
    master's home is where its administrator's ManagerSettings.config usually lives. The new
    certificate is in this home's Root store already (the rotation put it there). A manager on
    another machine follows the steps the page lists, as a worker that missed the rotation does.
    """
    try:
        settings = load_manager_settings(home)
    except SettingsError:
        return  # no manager in this home (or one this master cannot read): nothing to keep pinned
    new = str(result.get("new") or result.get("aborted") or "")
    if not new:
        return
    if action == "start" and settings.master_https_cert_thumbprint != new:
        set_setting(home, "manager", "NextMasterHttpsCertThumbprint", new)
    elif action in ("switch", "finish") and result.get("phase") in ("switched", "finished"):
        if settings.master_https_cert_thumbprint != new:
            set_setting(home, "manager", "MasterHttpsCertThumbprint", new)
        if settings.next_master_https_cert_thumbprint:
            set_setting(home, "manager", "NextMasterHttpsCertThumbprint", "")
    elif action == "abort" and settings.next_master_https_cert_thumbprint == new:
        set_setting(home, "manager", "NextMasterHttpsCertThumbprint", "")


def console_context(home: Path, material: TlsMaterial) -> Callable[[], ssl.SSLContext]:
    """A builder of the console's server context from the current TLS material.

    ``ConsoleCertThumbprint`` names a certificate with its key in the My store (or Root, where
    MakeCert may have put the master's); empty means the certificate the master's binding serves.
    """
    settings = material.settings
    wanted = settings.console_cert_thumbprint or material.thumbprint
    if wanted == material.thumbprint:
        cert_file, key_file = material.cert_file, material.key_file
    else:
        cert_file, key_file = _find_with_key(home, wanted)
    version = settings.tls_minimum_version
    return lambda: console_server_context(cert_file, key_file, minimum_version=version)


def _find_with_key(home: Path, thumbprint: str) -> tuple[Path, Path]:
    for name in ("My", "Root"):
        store = CertStore(home, name)
        try:
            cred = store.get(thumbprint)
        except CertificateNotFound:
            continue
        if cred.private_key is not None:
            return store.cert_path(thumbprint), store.key_path(thumbprint)
    raise SettingsError(
        f"ConsoleCertThumbprint names certificate {thumbprint}, which is in neither the My nor the Root "
        "store with its private key",
        fix="packfleet cert import console.pfx --password P --store My, or packfleet settings set master "
        'ConsoleCertThumbprint ""   (serve the master certificate)',
    )


def default_address(host: str, port: int) -> str:
    """The master's address for the dashboard when MasterAddress is not set."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host  # noqa: S104 - compared, not bound
    return f"https://{shown}:{port}"
