"""Builders shared by the master and manager tests: a master home made with the library calls,
client identities, and requests that return the whole problem document.

Imported as ``master.support`` (pytest puts ``tests/`` on ``sys.path`` because it has no
``__init__.py``), so ``tests/manager`` reuses it without a copy.
"""

from __future__ import annotations

import io
import json
import ssl
import textwrap
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from packfleet import protocol
from packfleet.catalog import Catalog
from packfleet.config import (
    Binding,
    ManagerSettings,
    MasterSettings,
    add_binding,
    format_ipport,
    new_appid,
    save_manager_settings,
    save_master_settings,
)
from packfleet.master import MasterServer
from packfleet.packages import build_archive
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.transport import MasterClient, client_context

PORT_NUMBER = 8391  # what the settings and binding say; the tests listen on an ephemeral port


class FakeClock:
    """The master's and catalog's time, moved by hand (lease expiry without waiting)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class MasterHome:
    """A master's home as `packfleet master init` would leave it, plus one worker certificate."""

    home: Path
    master: Credential
    admin: Credential
    worker: Credential
    catalog_url: str

    @property
    def master_pem(self) -> str:
        return self.master.cert_pem().decode()


def public(cred: Credential) -> Credential:
    return Credential(cred.certificate)


def build_master_home(root: Path, *, catalog_url: str = "") -> MasterHome:
    home = root / "master"
    master = create_self_signed(["127.0.0.1", "localhost"])
    admin = create_self_signed(["packfleet-admin"])
    worker = create_self_signed(["worker1", "127.0.0.1"])
    root_store = CertStore(home, "Root")
    root_store.add(master)  # MakeCert -ss Root: the master certificate in Root, with its key
    root_store.add(public(admin))
    root_store.add(public(worker))
    CertStore(home, "My").add(admin)
    settings = MasterSettings(
        port_number=PORT_NUMBER, ssl_cert_thumbprint=master.thumbprint, catalog_url=catalog_url
    )
    save_master_settings(home, settings)
    add_binding(home, Binding(format_ipport("0.0.0.0", PORT_NUMBER), master.thumbprint, "Root", new_appid()))
    url = settings.resolved_catalog_url(home)
    with Catalog.open(url) as catalog:
        catalog.add_principal("admin", "admin", actor="test", thumbprint=admin.thumbprint)
    return MasterHome(home, master, admin, worker, url)


def write_manager_settings(mh: MasterHome, server: MasterServer) -> None:
    save_manager_settings(
        mh.home,
        ManagerSettings(
            master_endpoint=f"https://127.0.0.1:{server.port}",
            master_https_cert_thumbprint=mh.master.thumbprint,
            admin_cert_thumbprint=mh.admin.thumbprint,
        ),
    )


def context_for(cred: Credential | None, mh: MasterHome, folder: Path) -> ssl.SSLContext:
    """A client context presenting ``cred`` (or no certificate) and pinning the master."""
    if cred is None:
        return client_context(None, None, mh.master_pem)
    store = CertStore(folder / cred.thumbprint, "My")
    store.add(cred)
    return client_context(store.cert_path(cred.thumbprint), store.key_path(cred.thumbprint), mh.master_pem)


def client_for(
    cred: Credential | None, mh: MasterHome, server: MasterServer, folder: Path, *, role: str = "worker"
) -> MasterClient:
    return MasterClient(
        f"https://127.0.0.1:{server.port}",
        context_for(cred, mh, folder),
        role=role,
        pins=[mh.master.thumbprint],
        own_thumbprint=cred.thumbprint if cred else None,
        timeout=20,
    )


@dataclass
class Answer:
    status: int
    content_type: str
    body: Any


async def raw(
    ctx: ssl.SSLContext,
    server: MasterServer,
    method: str,
    path: str,
    *,
    body: Any = None,
    data: bytes | None = None,
) -> Answer:
    """One request on a fresh connection, returning status, content type and parsed body as sent."""
    payload = json.dumps(body).encode() if body is not None else data
    stream = io.BytesIO(payload) if payload is not None else None  # aiohttp warns on raw bytes > 1 MiB
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        async with session.request(method, f"https://127.0.0.1:{server.port}{path}", data=stream) as response:
            content = await response.read()
            try:
                parsed = json.loads(content)
            except ValueError:
                parsed = content
            return Answer(response.status, response.content_type, parsed)


def heartbeat_body(agent_id: str, name: str = "worker1") -> dict[str, Any]:
    beat = protocol.Heartbeat(
        agent_id=agent_id,
        display_name=name,
        machine_name="host1",
        user_account="packfleet",
        ips=["127.0.0.1"],
        cpu_percent=3.0,
        memory_free_mb=2048.0,
        running_tasks=0,
        max_tasks=4,
        version="test",
    )
    data: dict[str, Any] = protocol.encode(beat)
    return data


def new_agent_id() -> str:
    return str(uuid.uuid4())


def project_archive(root: Path) -> bytes:
    """A small project: one python package with an int and a sensitive string parameter."""
    folder = root / "etl"
    (folder / "etl").mkdir(parents=True, exist_ok=True)
    (folder / "packfleet.toml").write_text(
        textwrap.dedent(
            """
            [project]
            name = "etl"
            version = "1.0.0"

            [parameters.rows]
            type = "int"
            default = 10

            [parameters.password]
            type = "string"
            default = ""
            sensitive = true

            [packages.load]
            kind = "python"
            entry = "etl.jobs:main"
            """
        )
    )
    (folder / "etl" / "__init__.py").write_text("")
    (folder / "etl" / "jobs.py").write_text("def main(context):\n    return 0\n")
    return build_archive(folder)
