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
from packfleet.console import EventTicket, MasterFacts
from packfleet.errors import CertificateNotFound, SettingsError
from packfleet.master import _admin_api, _fleet
from packfleet.master._state import MasterState
from packfleet.master._tls import TlsMaterial
from packfleet.master._wakeup import EVENTS
from packfleet.pki import CertStore
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
