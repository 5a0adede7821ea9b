"""Shared parts of the security suite: a real master over real TLS, and bad certificates of every kind.

- ``mh`` / ``master`` / ``manager``: a master home (as ``master init`` leaves it), its MasterServer
  running in-process on an ephemeral loopback port with its real TLS context, and an admin client.
- ``master_process``: the same as a real ``packfleet master run`` subprocess (module-scoped; its
  log file is ``master_process.master.log_path``).
- ``certs``: a :class:`CertFactory` making good and bad certificates (expired, not yet valid,
  CA:TRUE, chained to another certificate, server-only EKU, RSA-1024, SHA-1, CA-like).
- ``peer``: a :class:`Peer` that speaks to ``master`` presenting any certificate (weak ones too: its
  client context is at OpenSSL security level 0, so the *master* is what refuses), on a fresh
  connection per request or on one kept-alive session.
- ``master_log``: the master's log records (caplog at INFO on ``packfleet.master``).
"""

from __future__ import annotations

import io
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from master.support import MasterHome, build_master_home, heartbeat_body, write_manager_settings
from packfleet.localcluster import LocalCluster
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import CertStore, Credential
from packfleet.protocol import routes

_BOTH = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH)
_SIGN_ONLY = x509.KeyUsage(True, False, False, False, False, False, False, False, False)


class CertFactory:
    """Certificates for attacks: each method makes one kind, with its private key."""

    def make(
        self,
        name: str = "worker",
        *,
        key: Any = None,
        not_before: timedelta = timedelta(hours=-1),
        not_after: timedelta = timedelta(days=30),
        ca: bool | None = False,
        eku: tuple[x509.ObjectIdentifier, ...] = _BOTH,
        issuer: Credential | None = None,
    ) -> Credential:
        key = key or ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.certificate.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + not_before)
            .not_valid_after(now + not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        )
        if ca is not None:
            builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        usage = (
            x509.KeyUsage(True, False, False, False, False, True, False, False, False) if ca else _SIGN_ONLY
        )
        builder = builder.add_extension(usage, critical=False)
        signer = issuer.private_key if issuer is not None else key
        return Credential(builder.sign(signer, hashes.SHA256()), key)  # type: ignore[arg-type]

    def good(self, name: str = "worker") -> Credential:
        return self.make(name)

    def expired(self) -> Credential:
        return self.make("expired", not_before=timedelta(days=-10), not_after=timedelta(days=-1))

    def not_yet_valid(self) -> Credential:
        return self.make("future", not_before=timedelta(days=1), not_after=timedelta(days=30))

    def ca_true(self, name: str = "ca") -> Credential:
        return self.make(name, ca=True)

    def ca_like(self, name: str = "sneaky") -> Credential:
        """No BasicConstraints at all: OpenSSL may take it for a CA."""
        return self.make(name, ca=None)

    def chained(self, issuer: Credential, name: str = "leaf") -> Credential:
        return self.make(name, issuer=issuer)

    def server_only(self) -> Credential:
        return self.make("server-only", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))

    def rsa1024(self) -> Credential:
        return self.make("weak", key=rsa.generate_private_key(65537, 1024))  # noqa: S505 - the attack

    def sha1(self) -> Credential:
        """Signed with SHA-1 (cryptography refuses to, so the signature is swapped in by hand)."""
        key = rsa.generate_private_key(65537, 2048)
        cert = self.make("sha1", key=key).certificate
        sha256_oid = bytes.fromhex("06092a864886f70d01010b")  # sha256WithRSAEncryption
        sha1_oid = bytes.fromhex("06092a864886f70d010105")  # sha1WithRSAEncryption, same length
        tbs = cert.tbs_certificate_bytes.replace(sha256_oid, sha1_oid)
        signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - the attack
        der = cert.public_bytes(Encoding.DER).replace(sha256_oid, sha1_oid)
        der = der[: -len(signature)] + signature  # same key size: same length, same DER framing
        return Credential(x509.load_der_x509_certificate(der), key)


@pytest.fixture
def certs() -> CertFactory:
    return CertFactory()


@pytest.fixture
def mh(tmp_path: Path) -> MasterHome:
    return build_master_home(tmp_path)


@pytest.fixture
async def master(mh: MasterHome) -> AsyncIterator[MasterServer]:
    server = MasterServer(mh.home, host="127.0.0.1", port=0, watch_interval=0)
    await server.start()
    write_manager_settings(mh, server)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def manager(mh: MasterHome, master: MasterServer) -> AsyncIterator[ManagerClient]:
    async with ManagerClient.from_home(mh.home) as client:
        yield client


@pytest.fixture
def master_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level("INFO", logger="packfleet.master")
    return caplog


@dataclass
class Answer:
    status: int
    body: Any

    @property
    def text(self) -> str:
        """The problem document's detail and fix (or the whole body), for ``in`` checks."""
        if isinstance(self.body, dict):
            return f"{self.body.get('detail', '')} fix: {self.body.get('fix', '')} {json.dumps(self.body)}"
        return str(self.body)


class Peer:
    """A client of ``master`` presenting a chosen certificate, over real TLS."""

    def __init__(self, mh: MasterHome, server: MasterServer, folder: Path) -> None:
        self.mh, self.server, self.folder = mh, server, folder

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def context(self, cred: Credential | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let weak client certificates reach the master
        ctx.check_hostname = False
        ctx.load_verify_locations(cadata=self.mh.master_pem)
        if cred is not None:
            store = CertStore(self.folder / cred.thumbprint, "My")
            store.add(cred)
            ctx.load_cert_chain(store.cert_path(cred.thumbprint), store.key_path(cred.thumbprint))
        return ctx

    async def request(
        self,
        cred: Credential | None,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request on a fresh connection."""
        async with self.session(cred) as session:
            return await self.send(session, method, path, body=body, data=data, headers=headers)

    def session(self, cred: Credential | None) -> aiohttp.ClientSession:
        """A keep-alive session (one connection, reused) presenting ``cred``."""
        connector = aiohttp.TCPConnector(ssl=self.context(cred), limit=1, force_close=False)
        return aiohttp.ClientSession(connector=connector)

    async def send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        payload = json.dumps(body).encode() if body is not None else data
        stream = io.BytesIO(payload) if payload is not None else None
        async with session.request(method, self.url + path, data=stream, headers=headers) as response:
            content = await response.read()
            try:
                parsed = json.loads(content)
            except ValueError:
                parsed = content
            return Answer(response.status, parsed)

    async def refused_handshake(self, cred: Credential | None) -> str:
        """Connect presenting ``cred``; return the client's error. Fails if the master served it."""
        try:
            answer = await self.request(cred, "GET", routes.WORKER_LEASE)
        except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            return str(exc)
        raise AssertionError(f"the master completed the handshake and answered {answer.status}")

    async def heartbeat(self, cred: Credential, agent_id: str, name: str = "worker1") -> Answer:
        return await self.request(cred, "POST", routes.WORKER_HEARTBEAT, body=heartbeat_body(agent_id, name))


@pytest.fixture
def peer(mh: MasterHome, master: MasterServer, tmp_path: Path) -> Peer:
    return Peer(mh, master, tmp_path / "peers")


def new_agent() -> str:
    return str(uuid.uuid4())


def lease_body(agent_id: str, capacity: int = 1) -> dict[str, Any]:
    return {"agent_id": agent_id, "capacity": capacity, "wait_seconds": 0, "lease_seconds": 60}


@pytest.fixture(scope="module")
def master_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real ``packfleet master run`` subprocess (no workers); stopped at the end of the module."""
    with LocalCluster(tmp_path_factory.mktemp("security-master"), fast=False) as cluster:
        cluster.init_master()
        cluster.start_master()
        yield cluster
