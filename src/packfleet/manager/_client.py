"""The admin client: one async method per admin route, answers as :mod:`packfleet.protocol` messages.

It is what ``packfleet manager ...`` (and ``deploy``, ``run``, ``executions``) sit on: SSIS Manager's
operations and the ``catalog.*`` procedures, spoken over mutual TLS with the admin certificate that
``packfleet master init`` made, to a master pinned by its certificate thumbprint.

A refusal the master answers with its own problem document is raised as the error the master
raised: :class:`~packfleet.errors.RemoteNotFound` (a ``NotFound``), :class:`~packfleet.errors.RemoteConflict`
(a ``Conflict``), :class:`~packfleet.errors.Refused` (403) or :class:`~packfleet.errors.BadRequest`;
none of them is a :class:`~packfleet.errors.TransportError`. A master that failed or is unavailable
(5xx) and a connection that failed stay transport errors, worth a retry.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from packfleet.config import ManagerSettings, load_manager_settings, settings_path, split_endpoints
from packfleet.errors import (
    ApiError,
    BadRequest,
    PackfleetError,
    PkiError,
    Refused,
    RemoteConflict,
    RemoteError,
    RemoteNotFound,
    SettingsError,
    TlsError,
    TransportError,
    UsageError,
)
from packfleet.pki import CertStore, load_credential
from packfleet.protocol import (
    AuditEntry,
    CertificateEntry,
    ConnectedWorker,
    DeletedWorker,
    EventPage,
    Execution,
    Health,
    Identity,
    JoinTokenView,
    PendingExplanation,
    ProjectVersion,
    RotationStatus,
    TrustedCertificate,
    Worker,
    routes,
)
from packfleet.transport import MasterClient, client_context, connect_master, parse_endpoint
from packfleet.trust import admin_certificate_rule, pins_in_root_rule, raise_first

#: Extra seconds on top of a long-poll's ``wait`` before the client gives up on the answer.
_WAIT_MARGIN = 30.0


@dataclass(frozen=True)
class RemoteOptions:
    """Where the master is and who this manager is, from the command line or the environment.

    Each field overrides its ManagerSettings.config counterpart; all of them together let a
    manager run from any machine with no home at all (``--master``, ``--master-cert``,
    ``--admin-cert``, ``--admin-key``, or ``PACKFLEET_MASTER``, ``PACKFLEET_MASTER_CERT``,
    ``PACKFLEET_ADMIN_CERT``, ``PACKFLEET_ADMIN_KEY``).
    """

    master: str = ""
    master_cert: Path | None = None
    admin_cert: Path | None = None
    admin_key: Path | None = None


_REMOTE_FIX = (
    "packfleet --master https://MASTER:8391 --master-cert master.cer --admin-cert NAME.crt "
    "--admin-key NAME.key ... (NAME.crt/.key from `packfleet manager identity create` on the master)"
)


def _in_home(home: Path, configured: str) -> Path:
    return home / Path(configured).expanduser()  # `/` keeps an absolute path as it is


def _private_key_file(path: Path) -> Path:
    """Refuse a private key file others may read, as ssh does: the key is the admin's identity."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SettingsError(f"cannot read the admin key {path}: {exc.strerror}", fix=_REMOTE_FIX) from None
    if mode & 0o077:
        raise PkiError(
            f"the admin key {path} is readable by other users (mode {mode & 0o777:o}); a private "
            "key must be readable by its owner only",
            fix=f"chmod 600 {path}",
        )
    return path


#: Pause between resends of a submit whose answer was lost, growing to the last one.
_RESEND_PAUSES = (0.5, 1.0, 2.0, 3.0)


async def _retried(call: Callable[[], Awaitable[Any]], retry_for: float) -> Any:
    """``call()``, again after a transport failure or a 502/503/504 while ``retry_for`` seconds last.

    Only for calls safe to repeat (an idempotent submit): the first attempt may have been carried
    out with its answer lost.
    """
    deadline = time.monotonic() + retry_for
    for attempt in itertools.count():
        try:
            return await call()
        except TransportError as exc:
            retryable = not isinstance(exc, ApiError | TlsError) or (
                isinstance(exc, ApiError) and exc.status in (502, 503, 504)
            )
            pause = _RESEND_PAUSES[min(attempt, len(_RESEND_PAUSES) - 1)]
            if not retryable or time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover - itertools.count() never ends


_BY_STATUS: dict[int, type[RemoteError]] = {403: Refused, 404: RemoteNotFound, 409: RemoteConflict}


def _run_body(
    folder: str,
    project: str,
    package: str,
    parameters: dict[str, str] | None,
    workers: list[str] | None,
    retry_count: int,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """A :class:`~packfleet.protocol.RunPackage` as JSON."""
    body: dict[str, Any] = {
        "folder": folder,
        "project": project,
        "package": package,
        "parameters": dict(parameters or {}),
        "workers": list(workers or []),
        "retry_count": retry_count,
    }
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    return body


def answered_error(exc: ApiError) -> PackfleetError:
    """The error the master's 4xx problem document stands for; anything else as it came.

    Only the master's own documents (``type`` under ``urn:packfleet:problem:``) are mapped: a
    proxy's 404 page says nothing about the master's records.
    """
    if not 400 <= exc.status < 500 or not exc.problem_type.startswith(routes.PROBLEM_TYPE_PREFIX):
        return exc
    cls = _BY_STATUS.get(exc.status, BadRequest)
    return cls(
        exc.message,
        status=exc.status,
        problem_type=exc.problem_type,
        fix=exc.fix,
        method=exc.method,
        path=exc.path,
        thumbprint=exc.thumbprint,
        worker=exc.worker,
    )


def _path(template: str, **values: str | int) -> str:
    return template.format(**{name: quote(str(value), safe="") for name, value in values.items()})


class ManagerClient:
    """Talk to a master's admin routes.

    >>> async with ManagerClient.from_home(home) as manager:          # doctest: +SKIP
    ...     await manager.add_worker(Path("worker.cer").read_text(), enable=True)
    ...     execution = await manager.run("default", "etl", "load", {"batch": "10"})
    """

    def __init__(self, client: MasterClient) -> None:
        self.client = client

    @classmethod
    def from_home(cls, home: Path, *, timeout: float = 60.0) -> ManagerClient:
        """Build a client from ``<home>/ManagerSettings.config`` and the home's My and Root stores."""
        return cls.connect(home, RemoteOptions(), timeout=timeout)

    @classmethod
    def connect(cls, home: Path | None, options: RemoteOptions, *, timeout: float = 60.0) -> ManagerClient:
        """Build a client from ``options`` first, then ``<home>/ManagerSettings.config``.

        The master's address: ``options.master`` or MasterEndpoint. Its pin: the certificate file
        ``options.master_cert`` (or MasterCertFile), else MasterHttpsCertThumbprint in the Root
        store. The admin identity: the PEM pair ``options.admin_cert``/``admin_key`` (or
        AdminCertFile/AdminKeyFile), else AdminCertThumbprint in the My store.
        """
        source = settings_path(home, "manager") if home is not None else None
        if source is not None and source.exists():
            settings = load_manager_settings(home) if home is not None else ManagerSettings()
        else:
            settings = ManagerSettings()
        base = home if home is not None else Path.cwd()
        endpoint = options.master or settings.master_endpoint
        master_cert = options.master_cert or (
            _in_home(base, settings.master_cert_file) if settings.master_cert_file else None
        )
        if (options.admin_cert is None) != (options.admin_key is None):
            raise UsageError(
                "--admin-cert and --admin-key go together: the certificate says who you are, the "
                "key proves it",
                fix=_REMOTE_FIX,
            )
        admin_cert, admin_key = options.admin_cert, options.admin_key
        if admin_cert is None and settings.admin_cert_file and settings.admin_key_file:
            admin_cert = _in_home(base, settings.admin_cert_file)
            admin_key = _in_home(base, settings.admin_key_file)
        if not endpoint:
            raise SettingsError(
                "no master address: neither --master nor PACKFLEET_MASTER is given and "
                f"{source or 'ManagerSettings.config'} sets no MasterEndpoint",
                fix=_REMOTE_FIX,
            )
        # Several comma-separated URLs (masters sharing one PostgreSQL catalog) fail over in turn.
        for url in split_endpoints(endpoint):
            parse_endpoint(url, kind="manager", fix="--master https://MASTER:8391")
        if master_cert is not None:
            master = load_credential(master_cert)
            pins = [master.thumbprint]
            pinned_pem = master.cert_pem().decode()
        else:
            if home is None or not settings.master_https_cert_thumbprint:
                raise SettingsError(
                    "no pinned master certificate: give the master's certificate with --master-cert "
                    "master.cer (or PACKFLEET_MASTER_CERT)",
                    fix=_REMOTE_FIX,
                )
            raise_first(pins_in_root_rule(home, settings, role="manager"))
            root = CertStore(home, "Root")
            pins = [settings.master_https_cert_thumbprint]
            if settings.next_master_https_cert_thumbprint:
                pins.append(settings.next_master_https_cert_thumbprint)  # a rotation is under way
            pinned_pem = "".join(root.get(pin).cert_pem().decode() for pin in pins)
        if admin_cert is not None and admin_key is not None:
            own = load_credential(admin_cert).thumbprint
            context = client_context(admin_cert, _private_key_file(admin_key), pinned_pem)
        else:
            if home is None or not settings.admin_cert_thumbprint:
                raise SettingsError(
                    "no admin identity: give --admin-cert NAME.crt --admin-key NAME.key (or "
                    "PACKFLEET_ADMIN_CERT and PACKFLEET_ADMIN_KEY)",
                    fix=_REMOTE_FIX,
                )
            own = settings.admin_cert_thumbprint
            # The admin certificate rule doctor applies too: in My, with its own key.
            raise_first(admin_certificate_rule(home, settings, profile=False))
            admin = CertStore(home, "My")
            context = client_context(admin.cert_path(own), admin.key_path(own), pinned_pem)
        client = connect_master(
            endpoint, context, role="manager", pins=pins, own_thumbprint=own, timeout=timeout
        )
        return cls(client)

    async def __aenter__(self) -> ManagerClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.close()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return await self.client.request(method, path, **kwargs)
        except ApiError as exc:
            mapped = answered_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    # --- workers ------------------------------------------------------------------------------

    async def list_workers(self) -> list[Worker]:
        return Worker.many(await self._call("GET", routes.ADMIN_WORKERS))

    async def add_worker(
        self,
        cert_pem: str,
        display_name: str | None = None,
        enable: bool = False,
        worker: str | None = None,
    ) -> TrustedCertificate:
        """Trust a worker certificate (the master's Root store and catalog).

        Pending until it beats, when it registers a new worker; with ``worker`` (an existing
        worker's agent id, thumbprint or name) it is bound to that worker at once.
        """
        body: dict[str, Any] = {"cert_pem": cert_pem, "enable": enable}
        if display_name is not None:
            body["display_name"] = display_name
        if worker:
            body["worker"] = worker
        return TrustedCertificate.from_wire(await self._call("POST", routes.ADMIN_WORKERS, json_body=body))

    async def get_worker(self, ref: str) -> Worker:
        return Worker.from_wire(await self._call("GET", _path(routes.ADMIN_WORKER, ref=ref)))

    async def enable_worker(self, ref: str) -> Worker:
        return Worker.from_wire(await self._call("POST", _path(routes.ADMIN_WORKER_ENABLE, ref=ref)))

    async def disable_worker(self, ref: str) -> Worker:
        return Worker.from_wire(await self._call("POST", _path(routes.ADMIN_WORKER_DISABLE, ref=ref)))

    async def update_worker(
        self,
        ref: str,
        *,
        description: str | None = None,
        tags: str | None = None,
        display_name: str | None = None,
    ) -> Worker:
        changes = {"description": description, "tags": tags, "display_name": display_name}
        body = {name: value for name, value in changes.items() if value is not None}
        return Worker.from_wire(
            await self._call("PATCH", _path(routes.ADMIN_WORKER, ref=ref), json_body=body)
        )

    async def delete_worker(self, ref: str) -> DeletedWorker:
        return DeletedWorker.from_wire(await self._call("DELETE", _path(routes.ADMIN_WORKER, ref=ref)))

    async def certificates(self) -> list[CertificateEntry]:
        """Every fleet certificate (master, admin, workers) with ``days_left`` and ``warning``."""
        return CertificateEntry.many(await self._call("GET", routes.ADMIN_CERTIFICATES))

    async def metrics(self) -> str:
        """The master's Prometheus exposition text (``GET /metrics``)."""
        body: bytes = await self._call("GET", routes.METRICS, raw=True)
        return body.decode()

    async def revoke_certificate(self, thumbprint: str) -> TrustedCertificate:
        path = _path(routes.ADMIN_CERTIFICATE_REVOKE, thumbprint=thumbprint)
        return TrustedCertificate.from_wire(await self._call("POST", path))

    async def connect_worker(
        self, ref: str, cert_pem: str | None = None, *, thumbprint: str | None = None
    ) -> ConnectedWorker:
        """Give worker ``ref`` a certificate, by PEM or by the thumbprint of one the master holds.

        Its old certificates leave the master's Root store.
        """
        path = _path(routes.ADMIN_WORKER_CONNECT, ref=ref)
        body = {"thumbprint": thumbprint} if thumbprint else {"cert_pem": cert_pem or ""}
        return ConnectedWorker.from_wire(await self._call("POST", path, json_body=body))

    # --- identities ---------------------------------------------------------------------------

    async def create_identity(self, name: str, role: str, cert_pem: str) -> Identity:
        """Pin ``cert_pem`` (no key) to a new identity ``name`` with ``role`` admin, executor or viewer."""
        body = {"name": name, "role": role, "cert_pem": cert_pem}
        return Identity.from_wire(await self._call("POST", routes.ADMIN_IDENTITIES, json_body=body))

    async def list_identities(self) -> list[Identity]:
        return Identity.many(await self._call("GET", routes.ADMIN_IDENTITIES))

    async def revoke_identity(self, name: str) -> Identity:
        path = _path(routes.ADMIN_IDENTITY_REVOKE, name=name)
        return Identity.from_wire(await self._call("POST", path))

    # --- join tokens --------------------------------------------------------------------------

    async def create_token(
        self,
        *,
        ttl_seconds: float = 3600.0,
        uses: int = 1,
        enable: bool = False,
        endpoint: str = "",
        worker: str = "",
    ) -> JoinTokenView:
        """A join token (``token`` is shown only in this answer); ``worker`` binds it to that worker."""
        body = {
            "ttl_seconds": ttl_seconds,
            "uses": uses,
            "enable": enable,
            "endpoint": endpoint,
            "worker": worker,
        }
        return JoinTokenView.from_wire(await self._call("POST", routes.ADMIN_TOKENS, json_body=body))

    async def list_tokens(self) -> list[JoinTokenView]:
        return JoinTokenView.many(await self._call("GET", routes.ADMIN_TOKENS))

    async def revoke_token(self, token_id: str) -> JoinTokenView:
        path = _path(routes.ADMIN_TOKEN_REVOKE, token_id=token_id)
        return JoinTokenView.from_wire(await self._call("POST", path))

    async def master_cert_rotation(self, *, wait_for: str | None = None, wait: float = 0.0) -> RotationStatus:
        """The master certificate rotation under way (``phase`` "none" when there is none), per worker.

        With ``wait_for`` (``confirmed`` or ``promoted``): held by the master up to ``wait`` seconds,
        until every online worker got there (an older master answers at once).
        """
        if wait_for is None or wait <= 0:
            return RotationStatus.from_wire(await self._call("GET", routes.ADMIN_ROTATION_MASTER_CERT))
        params = {"wait_for": wait_for, "wait": f"{wait:.3f}"}
        answer = await self._call(
            "GET", routes.ADMIN_ROTATION_MASTER_CERT, params=params, timeout=wait + 60.0
        )
        return RotationStatus.from_wire(answer)

    async def rotate_master_cert(
        self, action: str, *, cns: list[str] | None = None, days: int | None = None, force: bool = False
    ) -> RotationStatus:
        """Advance the master certificate rotation: ``start``, ``switch``, ``finish`` or ``abort``."""
        body: dict[str, Any] = {"action": action, "cns": list(cns or []), "force": force}
        if days is not None:
            body["days"] = days
        return RotationStatus.from_wire(
            await self._call("POST", routes.ADMIN_ROTATION_MASTER_CERT, json_body=body)
        )

    # --- projects -----------------------------------------------------------------------------

    async def deploy(self, folder: str, archive_bytes: bytes) -> ProjectVersion:
        """Upload a project archive (``packages.build_archive``) into ``folder``."""
        return ProjectVersion.from_wire(
            await self._call(
                "POST", routes.ADMIN_PROJECTS, data=archive_bytes, params={"folder": folder}, timeout=300.0
            )
        )

    async def list_projects(self, folder: str | None = None) -> list[ProjectVersion]:
        params = {"folder": folder} if folder else None
        return ProjectVersion.many(await self._call("GET", routes.ADMIN_PROJECTS, params=params))

    # --- executions ---------------------------------------------------------------------------

    async def run(
        self,
        folder: str,
        project: str,
        package: str,
        parameters: dict[str, str] | None = None,
        workers: list[str] | None = None,
        retry_count: int = 0,
        idempotency_key: str | None = None,
        retry_for: float = 0.0,
    ) -> Execution:
        """Create an execution; ``parameters`` are text, typed by the master against the manifest.

        With ``idempotency_key`` the master returns the execution an earlier submit with that key
        created; then a submit whose answer was lost (connection dropped, master restarting, catalog
        unavailable: 502/503/504) is sent again, with the same key, for up to ``retry_for`` seconds.
        """
        body = _run_body(folder, project, package, parameters, workers, retry_count, idempotency_key)
        return Execution.from_wire(await self._submit(body, retry_for))

    async def run_waiting(
        self,
        folder: str,
        project: str,
        package: str,
        parameters: dict[str, str] | None = None,
        workers: list[str] | None = None,
        retry_count: int = 0,
        idempotency_key: str | None = None,
        retry_for: float = 0.0,
        *,
        wait: float,
    ) -> EventPage:
        """:meth:`run`, answered as the first page of :meth:`events`: the master holds the answer
        up to ``wait`` seconds (at most 30) until the execution has events or has ended.

        ``run --wait`` in one request where it took two (a submit, then a follow whose first look
        found nothing). A master that does not know ``wait`` ignores it and answers the execution:
        that comes back as a page with no events and ``finished`` false (its events are still to
        be read, even if it has ended), and the caller follows with :meth:`events`.
        """
        body = _run_body(folder, project, package, parameters, workers, retry_count, idempotency_key)
        answer = await self._submit(body, retry_for, params={"wait": str(wait)}, timeout=wait + _WAIT_MARGIN)
        if isinstance(answer, dict) and "execution_id" in answer:  # an older master: the execution
            return EventPage(Execution.from_wire(answer), [], 0, finished=False)
        return EventPage.from_wire(answer)

    async def _submit(self, body: dict[str, Any], retry_for: float, **options: Any) -> Any:
        """POST a run; resent for ``retry_for`` seconds only when it carries an idempotency key."""
        call = functools.partial(self._call, "POST", routes.ADMIN_EXECUTIONS, json_body=body, **options)
        return await (_retried(call, retry_for) if "idempotency_key" in body else call())

    async def list_executions(self, limit: int = 50, status: int | None = None) -> list[Execution]:
        params = {"limit": str(limit)}
        if status is not None:
            params["status"] = str(status)
        return Execution.many(await self._call("GET", routes.ADMIN_EXECUTIONS, params=params))

    async def get_execution(self, execution_id: int) -> Execution:
        path = _path(routes.ADMIN_EXECUTION, execution_id=execution_id)
        return Execution.from_wire(await self._call("GET", path))

    async def events(self, execution_id: int, after_id: int = 0, wait: float = 0.0) -> EventPage:
        """``{"execution", "events", "last_id", "finished"}``; with ``wait``, the master holds the
        request up to that many seconds (at most 30) until there are new events or the run ends."""
        path = _path(routes.ADMIN_EXECUTION_EVENTS, execution_id=execution_id)
        params = {"after_id": str(after_id), "wait": str(wait)}
        return EventPage.from_wire(await self._call("GET", path, params=params, timeout=wait + _WAIT_MARGIN))

    async def pending(self, execution_id: int) -> PendingExplanation:
        """Why the execution is still pending: ``reasons`` (per worker, with figures) and ``ready``."""
        path = _path(routes.ADMIN_EXECUTION_PENDING, execution_id=execution_id)
        return PendingExplanation.from_wire(await self._call("GET", path))

    async def cancel(self, execution_id: int) -> Execution:
        path = _path(routes.ADMIN_EXECUTION_CANCEL, execution_id=execution_id)
        return Execution.from_wire(await self._call("POST", path))

    async def audit(self, limit: int = 100, after_id: int = 0, *, newest: bool = False) -> list[AuditEntry]:
        params = {"limit": str(limit), "after_id": str(after_id), "newest": "1" if newest else "0"}
        return AuditEntry.many(await self._call("GET", routes.ADMIN_AUDIT, params=params))

    async def health(self) -> Health:
        """The master's liveness answer: status, version and its UTC time."""
        return Health.from_wire(await self._call("GET", routes.HEALTH))

    async def openapi(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", routes.OPENAPI)
        return result
