"""The admin client: one async method per admin route, answers as the route's plain JSON.

It is what ``packfleet manager ...`` (and ``deploy``, ``run``, ``executions``) sit on: SSIS Manager's
operations and the ``catalog.*`` procedures, spoken over mutual TLS with the admin certificate that
``packfleet master init`` made, to a master pinned by its certificate thumbprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from packfleet.config import ManagerSettings, load_manager_settings, settings_path
from packfleet.errors import SettingsError
from packfleet.pki import CertStore
from packfleet.protocol import routes
from packfleet.transport import MasterClient, client_context, connect_master

#: Extra seconds on top of a long-poll's ``wait`` before the client gives up on the answer.
_WAIT_MARGIN = 30.0


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
        settings = load_manager_settings(home)
        source = settings_path(home, "manager")
        _require(settings, source)
        admin = CertStore(home, "My")
        root = CertStore(home, "Root")
        pins = [settings.master_https_cert_thumbprint]
        if settings.next_master_https_cert_thumbprint:
            pins.append(settings.next_master_https_cert_thumbprint)  # a rotation is under way
        pinned_pem = "".join(root.get(pin).cert_pem().decode() for pin in pins)
        admin_thumbprint = settings.admin_cert_thumbprint
        if admin.get(admin_thumbprint).private_key is None:
            raise SettingsError(
                f"the admin certificate {admin_thumbprint} in store My has no private key, so it cannot "
                "prove who this manager is",
                fix="packfleet cert import admin.pfx --password P --store My",
            )
        context = client_context(
            admin.cert_path(admin_thumbprint), admin.key_path(admin_thumbprint), pinned_pem
        )
        client = connect_master(  # several comma-separated URLs fail over in turn
            settings.master_endpoint,
            context,
            role="manager",
            pins=pins,
            own_thumbprint=admin_thumbprint,
            timeout=timeout,
        )
        return cls(client)

    async def __aenter__(self) -> ManagerClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.close()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.client.request(method, path, **kwargs)

    # --- workers ------------------------------------------------------------------------------

    async def list_workers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", routes.ADMIN_WORKERS)
        return result

    async def add_worker(
        self, cert_pem: str, display_name: str | None = None, enable: bool = False
    ) -> dict[str, Any]:
        """Trust a worker certificate (the master's Root store and catalog); pending until it beats."""
        body: dict[str, Any] = {"cert_pem": cert_pem, "enable": enable}
        if display_name is not None:
            body["display_name"] = display_name
        result: dict[str, Any] = await self._call("POST", routes.ADMIN_WORKERS, json_body=body)
        return result

    async def get_worker(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", _path(routes.ADMIN_WORKER, ref=ref))
        return result

    async def enable_worker(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", _path(routes.ADMIN_WORKER_ENABLE, ref=ref))
        return result

    async def disable_worker(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", _path(routes.ADMIN_WORKER_DISABLE, ref=ref))
        return result

    async def update_worker(
        self,
        ref: str,
        *,
        description: str | None = None,
        tags: str | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        changes = {"description": description, "tags": tags, "display_name": display_name}
        body = {name: value for name, value in changes.items() if value is not None}
        result: dict[str, Any] = await self._call(
            "PATCH", _path(routes.ADMIN_WORKER, ref=ref), json_body=body
        )
        return result

    async def delete_worker(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("DELETE", _path(routes.ADMIN_WORKER, ref=ref))
        return result

    async def certificates(self) -> list[dict[str, Any]]:
        """Every fleet certificate (master, admin, workers) with ``days_left`` and ``warning``."""
        result: list[dict[str, Any]] = await self._call("GET", routes.ADMIN_CERTIFICATES)
        return result

    async def metrics(self) -> str:
        """The master's Prometheus exposition text (``GET /metrics``)."""
        body: bytes = await self._call("GET", routes.METRICS, raw=True)
        return body.decode()

    async def revoke_certificate(self, thumbprint: str) -> dict[str, Any]:
        path = _path(routes.ADMIN_CERTIFICATE_REVOKE, thumbprint=thumbprint)
        result: dict[str, Any] = await self._call("POST", path)
        return result

    async def connect_worker(self, ref: str, cert_pem: str) -> dict[str, Any]:
        """Give worker ``ref`` the certificate ``cert_pem``; its old ones leave the master's Root store."""
        path = _path(routes.ADMIN_WORKER_CONNECT, ref=ref)
        result: dict[str, Any] = await self._call("POST", path, json_body={"cert_pem": cert_pem})
        return result

    # --- join tokens --------------------------------------------------------------------------

    async def create_token(
        self,
        *,
        ttl_seconds: float = 3600.0,
        uses: int = 1,
        enable: bool = False,
        endpoint: str = "",
        worker: str = "",
    ) -> dict[str, Any]:
        """A join token (``token`` is shown only in this answer); ``worker`` binds it to that worker."""
        body = {
            "ttl_seconds": ttl_seconds,
            "uses": uses,
            "enable": enable,
            "endpoint": endpoint,
            "worker": worker,
        }
        result: dict[str, Any] = await self._call("POST", routes.ADMIN_TOKENS, json_body=body)
        return result

    async def list_tokens(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", routes.ADMIN_TOKENS)
        return result

    async def revoke_token(self, token_id: str) -> dict[str, Any]:
        path = _path(routes.ADMIN_TOKEN_REVOKE, token_id=token_id)
        result: dict[str, Any] = await self._call("POST", path)
        return result

    async def master_cert_rotation(self) -> dict[str, Any]:
        """The master certificate rotation under way (``phase`` "none" when there is none), per worker."""
        result: dict[str, Any] = await self._call("GET", routes.ADMIN_ROTATION_MASTER_CERT)
        return result

    async def rotate_master_cert(
        self, action: str, *, cns: list[str] | None = None, days: int | None = None, force: bool = False
    ) -> dict[str, Any]:
        """Advance the master certificate rotation: ``start``, ``switch``, ``finish`` or ``abort``."""
        body: dict[str, Any] = {"action": action, "cns": list(cns or []), "force": force}
        if days is not None:
            body["days"] = days
        result: dict[str, Any] = await self._call("POST", routes.ADMIN_ROTATION_MASTER_CERT, json_body=body)
        return result

    # --- projects -----------------------------------------------------------------------------

    async def deploy(self, folder: str, archive_bytes: bytes) -> dict[str, Any]:
        """Upload a project archive (``packages.build_archive``) into ``folder``."""
        result: dict[str, Any] = await self._call(
            "POST", routes.ADMIN_PROJECTS, data=archive_bytes, params={"folder": folder}, timeout=300.0
        )
        return result

    async def list_projects(self, folder: str | None = None) -> list[dict[str, Any]]:
        params = {"folder": folder} if folder else None
        result: list[dict[str, Any]] = await self._call("GET", routes.ADMIN_PROJECTS, params=params)
        return result

    # --- executions ---------------------------------------------------------------------------

    async def run(
        self,
        folder: str,
        project: str,
        package: str,
        parameters: dict[str, str] | None = None,
        workers: list[str] | None = None,
        retry_count: int = 0,
    ) -> dict[str, Any]:
        """Create an execution; ``parameters`` are text, typed by the master against the manifest."""
        body = {
            "folder": folder,
            "project": project,
            "package": package,
            "parameters": dict(parameters or {}),
            "workers": list(workers or []),
            "retry_count": retry_count,
        }
        result: dict[str, Any] = await self._call("POST", routes.ADMIN_EXECUTIONS, json_body=body)
        return result

    async def list_executions(self, limit: int = 50, status: int | None = None) -> list[dict[str, Any]]:
        params = {"limit": str(limit)}
        if status is not None:
            params["status"] = str(status)
        result: list[dict[str, Any]] = await self._call("GET", routes.ADMIN_EXECUTIONS, params=params)
        return result

    async def get_execution(self, execution_id: int) -> dict[str, Any]:
        path = _path(routes.ADMIN_EXECUTION, execution_id=execution_id)
        result: dict[str, Any] = await self._call("GET", path)
        return result

    async def events(self, execution_id: int, after_id: int = 0, wait: float = 0.0) -> dict[str, Any]:
        """``{"execution", "events", "last_id", "finished"}``; with ``wait``, the master holds the
        request up to that many seconds (at most 30) until there are new events or the run ends."""
        path = _path(routes.ADMIN_EXECUTION_EVENTS, execution_id=execution_id)
        params = {"after_id": str(after_id), "wait": str(wait)}
        result: dict[str, Any] = await self._call("GET", path, params=params, timeout=wait + _WAIT_MARGIN)
        return result

    async def cancel(self, execution_id: int) -> dict[str, Any]:
        path = _path(routes.ADMIN_EXECUTION_CANCEL, execution_id=execution_id)
        result: dict[str, Any] = await self._call("POST", path)
        return result

    async def audit(
        self, limit: int = 100, after_id: int = 0, *, newest: bool = False
    ) -> list[dict[str, Any]]:
        params = {"limit": str(limit), "after_id": str(after_id), "newest": "1" if newest else "0"}
        result: list[dict[str, Any]] = await self._call("GET", routes.ADMIN_AUDIT, params=params)
        return result

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", routes.HEALTH)
        return result

    async def openapi(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", routes.OPENAPI)
        return result


def _require(settings: ManagerSettings, source: Path) -> None:
    missing = [
        (key, value)
        for key, value in (
            ("MasterEndpoint", settings.master_endpoint),
            ("MasterHttpsCertThumbprint", settings.master_https_cert_thumbprint),
            ("AdminCertThumbprint", settings.admin_cert_thumbprint),
        )
        if not value
    ]
    if missing:
        key = missing[0][0]
        raise SettingsError(
            f"{source}: {', '.join(k for k, _ in missing)} not set, so the manager cannot reach the master",
            fix=f"packfleet master init (on the master), or: packfleet settings set manager {key} VALUE",
        )
