"""The master's side of the web console: the :class:`packfleet.console.Fleet` it hands the console,
and the console certificate (``ConsoleCertThumbprint``, else the master's own)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from packfleet import __version__
from packfleet.catalog import Catalog, ExecutionRecord, WorkerRecord
from packfleet.config import load_manager_settings, set_setting
from packfleet.console import EventTicket, MasterFacts
from packfleet.errors import CertificateNotFound, Conflict, InvalidValue, SettingsError
from packfleet.master import _admin_api, _fleet, _join_api
from packfleet.master._rotation import MasterCertRotation
from packfleet.master._state import MasterState
from packfleet.master._tls import TlsMaterial
from packfleet.master._trust import trust_in_root
from packfleet.master._wakeup import EVENTS, TASKS
from packfleet.packages import Project, resolve_parameters
from packfleet.pki import CertStore, Credential, check_usable, load_credential_bytes
from packfleet.protocol import hash_secret, new_join_token
from packfleet.transport import console_server_context

P = ParamSpec("P")
T = TypeVar("T")


class MasterFleet:
    """The running master as the console sees it: the admin API's own functions, nothing copied."""

    def __init__(
        self,
        state: MasterState,
        *,
        started_at: datetime,
        address: Callable[[], str],
        serving: Callable[[], tuple[str, str] | None],
    ) -> None:
        self._state = state
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
        rotation = self._state.rotation.record if self._state.rotation is not None else None
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
        return await _admin_api.set_worker_enabled(self._state, agent_id, enabled, actor=actor, reason=reason)

    async def delete_worker(self, agent_id: str, *, actor: str) -> dict[str, Any]:
        return await _admin_api.remove_worker(self._state, agent_id, actor=actor)

    async def cancel_execution(self, execution_id: int, *, actor: str) -> ExecutionRecord:
        return await _admin_api.cancel_execution(self._state, execution_id, actor=actor)

    async def shown_execution(self, record: ExecutionRecord) -> dict[str, Any]:
        return await _admin_api.shown_execution(self._state, record)

    async def certificates(self) -> list[dict[str, Any]]:
        return await _fleet.fleet_certificates(self._state, self._serving())

    async def update_worker(
        self, agent_id: str, *, actor: str, description: str | None, tags: str | None
    ) -> WorkerRecord:
        # What the admin route PATCH /workers/{ref} does: the catalog, then the principal cache.
        state = self._state
        worker = await state.db(
            state.catalog.update_worker, agent_id, actor=actor, description=description, tags=tags
        )
        state.principals.invalidate([c.thumbprint for c in worker.certificates])
        return worker

    def worker_certificate(self, data: bytes) -> Credential:
        """A worker certificate checked as ``manager worker add`` checks it (public part only)."""
        cred = load_credential_bytes(data)
        public = Credential(cred.certificate)  # never keep a key that came along
        check_usable(public, purposes=("client",), now=self._state.clock(), peer=True)
        return public

    def stored_certificate(self, thumbprint: str) -> bytes:
        """The certificate ``thumbprint`` from the master's Root or My store (PEM)."""
        wanted = thumbprint.replace(" ", "").replace(":", "").upper()
        for name in ("Root", "My"):
            try:
                return CertStore(self._state.home, name).get(wanted).cert_pem()
            except CertificateNotFound:
                continue
        raise CertificateNotFound(
            f"certificate {wanted} is in neither the master's Root nor its My store",
            fix="upload the worker's .cer file instead, or create a join token and run "
            "packfleet worker join TOKEN on the worker",
        )

    async def trust_worker(
        self, public: Credential, *, actor: str, display_name: str | None, enable: bool
    ) -> str:
        """The admin route POST /workers: record the certificate, trust it in Root; its thumbprint."""
        state = self._state
        record = await state.db(
            state.catalog.add_worker_certificate,
            public.cert_pem(),
            actor=actor,
            display_name=display_name,
            enable=enable,
        )
        await trust_in_root(state, public, actor=actor)
        return record.thumbprint

    async def create_join_token(self, *, actor: str, ttl_seconds: float, enable: bool) -> dict[str, Any]:
        """The admin route POST /tokens for one use: the token string and when it expires."""
        state = self._state
        ttl = timedelta(seconds=ttl_seconds)
        if not timedelta(0) < ttl <= _join_api.MAX_TTL:
            raise InvalidValue(f"a join token lives more than 0 s and at most {_join_api.MAX_TTL}")
        loop = asyncio.get_running_loop()
        pin, address = await loop.run_in_executor(None, _join_api._served_pin_and_address, state)
        endpoint = (address or self._address()).strip().rstrip("/")
        token = new_join_token(endpoint, pin)
        record = await state.db(
            state.catalog.create_join_token,
            token.token_id,
            hash_secret(token.secret),
            expires_at=state.clock() + ttl,
            uses=1,
            enable=enable,
            endpoint=endpoint,
            actor=actor,
        )
        return {"token": token.encode(), "expires_at": record.expires_at, "endpoint": endpoint}

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
        """The admin route POST /executions: resolve the parameters by the manifest, queue, wake."""
        state = self._state
        version = await state.db(state.catalog.get_project_version, folder, project)
        resolved = resolve_parameters(Project.from_dict(version.manifest), package, parameters)
        record = await state.db(
            state.catalog.create_execution,
            folder,
            project,
            package,
            parameters=resolved,
            actor=actor,
            allowed_workers=workers,
            project_version_id=version.id,
        )
        state.wakeups.notify(TASKS)
        return record

    # --- master certificate rotation, for the console's Certificates page -----------------------
    # Only calls into MasterCertRotation, the object the admin route POST /rotation/master-cert
    # drives: the console starts, switches, finishes and aborts exactly as the CLI does.

    def _master_rotation(self) -> MasterCertRotation:
        rotation = self._state.rotation
        if not isinstance(rotation, MasterCertRotation):
            raise Conflict("the master certificate rotation is not set up on this master yet")
        return rotation

    async def rotation_status(self) -> dict[str, Any] | None:
        rotation = self._master_rotation()
        if rotation.record is None:
            return None  # no list of every worker for a rotation that is not there
        return await rotation.status()

    async def rotate_master_certificate(
        self, action: str, *, actor: str, force: bool = False
    ) -> dict[str, Any]:
        rotation = self._master_rotation()
        if action == "start":
            result = await rotation.start(cns=[], days=None, actor=actor)
        elif action == "switch":
            result = await rotation.switch(actor=actor, force=force)
        elif action == "finish":
            result = await rotation.finish(actor=actor)
        elif action == "abort":
            result = await rotation.abort(actor=actor)
        else:
            raise InvalidValue(f"rotation step {action!r} is not one of start, switch, finish, abort")
        await self._state.db(_follow_local_manager, self._state.home, action, result)
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
