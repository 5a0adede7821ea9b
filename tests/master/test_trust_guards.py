"""The master's trust cannot be widened by a peer: no CA-like certificate enters Root through join,
renewal, ``worker add`` or ``connect``, and a certificate that only chains to Root binds to nobody;
a trust change the handshake does not serve yet is reported, not hidden."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from master.support import MasterHome, context_for, heartbeat_body, new_agent_id, raw
from packfleet import protocol
from packfleet.catalog import Catalog
from packfleet.errors import ApiError, BadRequest, TransportError
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.packages import Project, build_archive, inspect_archive, mask_parameters
from packfleet.pki import CertStore, Credential, sign_proof
from packfleet.protocol import join_proof_message, parse_join_token, routes
from packfleet.transport import MasterClient

Connect = Callable[[Credential | None], MasterClient]
_CLIENT = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH])
_SIGNS = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
_SIGNS_CERTS = x509.KeyUsage(True, False, False, False, False, True, False, False, False)


def _cert(name: str, *extensions: x509.ExtensionType, issuer: Credential | None = None) -> Credential:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    signer = issuer.private_key if issuer is not None else key
    return Credential(builder.sign(signer, hashes.SHA256()), key)  # type: ignore[arg-type]


def ca_like(name: str = "sneaky") -> Credential:
    """Self-signed, no BasicConstraints, keyCertSign: passed the old checks, acts as a CA in Root."""
    return _cert(name, _SIGNS_CERTS, _CLIENT)


def _catalog(mh: MasterHome) -> Catalog:
    return Catalog.open(mh.catalog_url, upgrade=False)


def _in_root(mh: MasterHome, cred: Credential) -> bool:
    return CertStore(mh.home, "Root").contains(cred.thumbprint)


# --- no CA-like certificate enters the Root store ------------------------------------------------


async def test_worker_add_and_connect_refuse_a_ca_like_certificate(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    sneaky = ca_like()
    with pytest.raises(BadRequest, match="has no BasicConstraints") as caught:
        await manager.add_worker(sneaky.cert_pem().decode(), enable=True)
    assert caught.value.status == 400 and not _in_root(mh, sneaky)

    agent = new_agent_id()
    await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    with pytest.raises(BadRequest, match="key usage of keyCertSign") as caught:
        ca = _cert("w", x509.BasicConstraints(ca=False, path_length=None), _SIGNS_CERTS, _CLIENT)
        await manager.connect_worker(agent, ca.cert_pem().decode())
    assert caught.value.status == 400 and not _in_root(mh, ca)
    with _catalog(mh) as catalog:
        assert {c.thumbprint for c in catalog.certificates()} == {mh.worker.thumbprint}


async def test_join_refuses_a_ca_like_certificate_and_keeps_the_token(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    created = await manager.create_token(endpoint=f"https://127.0.0.1:{server.port}")
    token = parse_join_token(created["token"])
    sneaky = ca_like()
    assert sneaky.private_key is not None
    agent = new_agent_id()
    ctx = context_for(None, mh, tmp_path)
    issued = (await raw(ctx, server, "GET", routes.JOIN)).body["issued_at"]
    proof = join_proof_message(token.token_id, issued, sneaky.sha256, agent)
    body = {
        "token_id": token.token_id,
        "secret": token.secret_text,
        "cert_pem": sneaky.cert_pem().decode(),
        "agent_id": agent,
        "display_name": "sneaky",
        "issued_at": issued,
        "signature": base64.b64encode(sign_proof(sneaky.private_key, proof)).decode(),
    }
    answer = await raw(ctx, server, "POST", routes.JOIN, body=body)
    assert answer.status == 400 and "has no BasicConstraints" in answer.body["detail"]
    assert not _in_root(mh, sneaky)
    assert (await manager.list_tokens())[0]["uses_left"] == 1


async def test_renewal_refuses_a_ca_like_certificate(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    worker = connect(mh.worker)
    agent = new_agent_id()
    await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    await manager.enable_worker(agent)
    sneaky = ca_like("worker1")
    assert sneaky.private_key is not None
    signed_at = datetime.now(UTC).isoformat()
    message = protocol.renewal_proof_message(agent, sneaky.thumbprint, mh.worker.thumbprint, signed_at)
    body = protocol.CertificateRenewal(
        agent_id=agent,
        cert_pem=sneaky.cert_pem().decode(),
        signed_at=signed_at,
        proof=base64.b64encode(sign_proof(sneaky.private_key, message)).decode(),
    )
    with pytest.raises(ApiError, match="has no BasicConstraints") as caught:
        await worker.request("POST", routes.WORKER_CERTIFICATE, json_body=dict(protocol.encode(body)))
    assert caught.value.status == 400 and not _in_root(mh, sneaky)


# --- a certificate that merely chains to Root binds to nobody --------------------------------------


async def test_a_leaf_signed_by_a_certificate_in_root_cannot_register_or_impersonate(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    victim = new_agent_id()
    await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(victim))
    await manager.enable_worker(victim)
    # A CA-like certificate that reached Root before these checks (or by hand), and a leaf it signs.
    sneaky = ca_like()
    CertStore(mh.home, "Root").add(Credential(sneaky.certificate))
    await server.reload()
    leaf = _cert("worker1", x509.BasicConstraints(ca=False, path_length=None), _SIGNS, _CLIENT, issuer=sneaky)
    intruder = connect(leaf)
    for claimed in (victim, new_agent_id()):
        try:
            reply = await intruder.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(claimed))
        except (TransportError, ssl.SSLError, OSError):
            continue  # a handshake that refuses the chain is as good
        assert reply["state"] == "conflict"
        assert "is not itself in the master's Root store" in reply["message"]
    with _catalog(mh) as catalog:
        assert catalog.authorize(leaf.thumbprint) is None
        assert [w.agent_id for w in catalog.list_workers()] == [victim]
        assert [c.thumbprint for c in catalog.get_worker(victim).certificates] == [mh.worker.thumbprint]


# --- a trust change the handshake does not serve is reported --------------------------------------


async def test_worker_add_reports_a_refused_reload(
    mh: MasterHome, server: MasterServer, manager: ManagerClient
) -> None:
    newcomer = _cert("w2", x509.BasicConstraints(ca=False, path_length=None), _SIGNS, _CLIENT)
    (mh.home / "bindings.json").write_text("{ not json")  # the next reload cannot read the binding
    with pytest.raises(ApiError) as caught:  # 503: the master failed, not the request
        await manager.add_worker(newcomer.cert_pem().decode())
    problem = caught.value
    assert problem.status == 503
    assert f"certificate {newcomer.thumbprint} is in the master's Root store" in problem.message
    assert "handshakes do not accept it yet" in problem.message and "bindings" in problem.message
    assert problem.fix


# --- open routes: bounded in size and in time ------------------------------------------------------


async def test_a_join_body_over_64_kib_is_refused(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    body: dict[str, Any] = {"padding": "x" * (64 * 1024)}
    answer = await raw(context_for(None, mh, tmp_path), server, "POST", routes.JOIN, body=body)
    assert answer.status == 413 and "at most 65536 bytes" in answer.body["detail"]


async def test_a_body_that_never_finishes_is_a_408(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    server.state.body_timeout = 0.3
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=context_for(None, mh, tmp_path), server_hostname="127.0.0.1"
    )
    try:
        head = f"POST {routes.JOIN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        writer.write((head + "Content-Length: 100\r\n\r\n{").encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), timeout=10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"did not arrive within 0.3 seconds" in answer


# --- problem statuses say whose fault it is --------------------------------------------------------


async def test_a_malformed_agent_id_is_a_400_not_a_retry(
    mh: MasterHome, server: MasterServer, connect: Connect
) -> None:
    with pytest.raises(ApiError, match="is not a worker agent id") as caught:
        await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body("nope"))
    assert caught.value.status == 400


async def test_a_broken_master_setting_is_a_500_with_its_fix(
    mh: MasterHome, server: MasterServer, manager: ManagerClient
) -> None:
    (mh.home / "bindings.json").write_text("{ not json")
    with pytest.raises(ApiError) as caught:
        await manager.create_token(endpoint=f"https://127.0.0.1:{server.port}")
    assert caught.value.status == 500 and "the master cannot answer" in caught.value.message
    assert caught.value.fix


# --- parameters: checked against, pinned to and masked by the execution's own version ------------


def _archive(root: Path, *, sensitive: bool) -> bytes:
    folder = root / f"etl-{sensitive}"
    (folder / "etl").mkdir(parents=True)
    (folder / "packfleet.toml").write_text(
        '[project]\nname = "etl"\nversion = "1.0.0"\n\n'
        f'[parameters.password]\ntype = "string"\ndefault = ""\nsensitive = {str(sensitive).lower()}\n\n'
        '[packages.load]\nkind = "python"\nentry = "etl.jobs:main"\n'
    )
    (folder / "etl" / "__init__.py").write_text("")
    (folder / "etl" / "jobs.py").write_text("def main(context):\n    return 0\n")
    return build_archive(folder)


async def test_a_run_stays_masked_by_its_own_version_after_a_deploy_unmarks_the_parameter(
    server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    await manager.deploy("default", _archive(tmp_path, sensitive=True))
    run = await manager.run("default", "etl", "load", parameters={"password": "hunter2"})
    assert run["parameters"] == {"password": "********"}
    await manager.deploy("default", _archive(tmp_path / "v2", sensitive=False))
    shown = await manager.get_execution(run["execution_id"])
    assert shown["parameters"] == {"password": "********"}
    assert "hunter2" not in repr(await manager.list_executions())
    later = await manager.run("default", "etl", "load", parameters={"password": "visible"})
    assert later["parameters"] == {"password": "visible"}


def test_a_name_the_manifest_does_not_declare_is_masked(tmp_path: Path) -> None:
    project = Project.from_dict(inspect_archive(_archive(tmp_path, sensitive=False)).to_dict())
    assert mask_parameters(project, "load", {"password": "x", "smuggled": "y"}) == {
        "password": "x",
        "smuggled": "********",
    }


async def test_a_run_is_pinned_to_the_version_its_parameters_were_checked_against(
    server: MasterServer, manager: ManagerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy landing between the manifest check and the insert must not change the version run."""
    first = await manager.deploy("default", _archive(tmp_path, sensitive=True))
    catalog = server.state.catalog
    read = catalog.get_project_version
    newer = _archive(tmp_path / "v2", sensitive=False)

    def read_then_deploy(*args: Any, **kwargs: Any) -> Any:
        version = read(*args, **kwargs)
        catalog.deploy_project("default", inspect_archive(newer).to_dict(), newer, actor="racer")
        return version

    monkeypatch.setattr(catalog, "get_project_version", read_then_deploy)
    run = await manager.run("default", "etl", "load", parameters={"password": "hunter2"})
    assert run["project_version_id"] == first["id"]
    assert run["parameters"] == {"password": "********"}


async def test_an_event_with_a_system_sequence_number_is_a_400(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    worker = connect(mh.worker)
    agent = new_agent_id()
    await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    await manager.enable_worker(agent)
    event = {"execution_id": 1, "task_id": 1, "attempt": 1, "seq": -2, "time": datetime.now(UTC).isoformat()}
    event |= {"level": 20, "source": "stdout", "message": "forged cancel"}
    with pytest.raises(ApiError, match="event seq -2 of task 1 attempt 1 is not 1 or more") as caught:
        await worker.request("POST", routes.WORKER_EVENTS, json_body={"agent_id": agent, "events": [event]})
    assert caught.value.status == 400


def test_join_secrets_stay_out_of_reprs() -> None:
    token = protocol.JoinToken("https://m:8391", "AB" * 32, "0123456789ab", b"\x01" * 32)
    request = protocol.JoinRequest("0123456789ab", token.secret_text, "PEM", "agent", "w", "now", "sig")
    assert token.secret_text not in repr(token) and "secret" not in repr(token)
    assert token.secret_text not in repr(request) and "secret" not in repr(request)
