"""Identity takeover: a certificate the master merely trusts must not become an existing worker.

Each case attacks a real master over real TLS and checks the refusal and that its text names the
certificate, the AgentId it claimed and the command that fixes it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from master.support import MasterHome, project_archive
from packfleet.catalog import Catalog
from packfleet.doctor import check_master
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import CertStore, Credential, sign_proof
from packfleet.protocol import AuditEntry, join_proof_message, parse_join_token, routes
from security.conftest import CertFactory, Peer, lease_body, new_agent


def _catalog(mh: MasterHome) -> Catalog:
    return Catalog.open(mh.catalog_url, upgrade=False)


async def _audit(manager: ManagerClient, action: str) -> list[AuditEntry]:
    return [r for r in await manager.audit(limit=1000) if r.action == action]


async def _victim(peer: Peer, manager: ManagerClient, mh: MasterHome, *, enabled: bool = True) -> str:
    """The worker of ``mh.worker`` (in Root since master init), registered and maybe enabled."""
    agent = new_agent()
    answer = await peer.heartbeat(mh.worker, agent)
    assert answer.status == 200, answer.text
    if enabled:
        await manager.enable_worker(agent)
    return agent


async def _trust_by_hand(master: MasterServer, mh: MasterHome, cred: Credential) -> None:
    """The seed's manual step: `packfleet cert import X --store Root` on the master, then a reload."""
    CertStore(mh.home, "Root").add(Credential(cred.certificate))
    await master.reload()


def _assert_takeover_refused(answer: Any, cred: Credential, agent: str) -> None:
    assert answer.status == 409, answer.text
    assert answer.body["type"] == "urn:packfleet:problem:identity-conflict"
    assert cred.thumbprint in answer.body["detail"] and agent in answer.body["detail"]
    assert answer.body["fix"] == f"packfleet manager worker connect {agent} --cert {cred.thumbprint}"


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled-victim", "disabled-victim"])
async def test_a_certificate_only_in_root_cannot_claim_an_existing_worker(
    mh: MasterHome,
    master: MasterServer,
    manager: ManagerClient,
    peer: Peer,
    certs: CertFactory,
    enabled: bool,
) -> None:
    victim = await _victim(peer, manager, mh, enabled=enabled)
    intruder = certs.good("intruder")
    await _trust_by_hand(master, mh, intruder)
    _assert_takeover_refused(await peer.heartbeat(intruder, victim), intruder, victim)
    lease = await peer.request(intruder, "POST", routes.WORKER_LEASE, body=lease_body(victim))
    assert lease.status == 403 and "belongs to no worker" in lease.text
    worker = await manager.get_worker(victim)
    assert [c["thumbprint"] for c in worker["certificates"]] == [mh.worker.thumbprint]
    assert worker["is_enabled"] is enabled


@pytest.mark.parametrize("enable", [False, True], ids=["pending", "pending-enable"])
async def test_a_pending_certificate_cannot_claim_an_existing_worker(
    mh: MasterHome,
    manager: ManagerClient,
    peer: Peer,
    certs: CertFactory,
    enable: bool,
) -> None:
    victim = await _victim(peer, manager, mh)
    intruder = certs.good("intruder")
    await manager.add_worker(intruder.cert_pem().decode(), enable=enable)
    _assert_takeover_refused(await peer.heartbeat(intruder, victim), intruder, victim)
    assert len(await manager.list_workers()) == 1


@pytest.mark.parametrize(
    "route",
    [routes.WORKER_EVENTS, routes.WORKER_COMPLETE, routes.WORKER_REPORT],
    ids=["events", "complete", "report"],
)
async def test_a_refused_certificate_cannot_report_for_the_victims_leased_task(
    mh: MasterHome,
    master: MasterServer,
    manager: ManagerClient,
    peer: Peer,
    certs: CertFactory,
    tmp_path: Path,
    route: str,
) -> None:
    victim = await _victim(peer, manager, mh)
    await manager.deploy("default", project_archive(tmp_path))
    await manager.run("default", "etl", "load", parameters={})
    leased = await peer.request(mh.worker, "POST", routes.WORKER_LEASE, body=lease_body(victim))
    [task] = leased.body["tasks"]
    intruder = certs.good("intruder")
    await _trust_by_hand(master, mh, intruder)
    assert (await peer.heartbeat(intruder, victim)).status == 409
    if route == routes.WORKER_EVENTS:
        now = datetime.now(UTC).isoformat()
        event = {"execution_id": task["execution_id"], "task_id": task["task_id"], "attempt": task["attempt"]}
        event |= {"seq": 1, "time": now, "level": 20, "source": "stdout", "message": "forged"}
        body: dict[str, Any] = {"agent_id": victim, "events": [event]}
    else:
        report = {"task_id": task["task_id"], "attempt": task["attempt"], "outcome": "succeeded"}
        body = {"agent_id": victim, "reports": [report | {"exit_code": 0, "message": "forged"}]}
        if route == routes.WORKER_REPORT:
            body["events"] = []
    answer = await peer.request(intruder, "POST", route, body=body)
    assert (
        answer.status == 403 and intruder.thumbprint in answer.text and "belongs to no worker" in answer.text
    )
    execution = (await manager.list_executions())[0]
    assert execution["status"] in (1, 2, 5)  # created, running or pending: nothing forged it to an end


async def test_a_bound_certificate_cannot_speak_for_another_worker(
    mh: MasterHome, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    victim = await _victim(peer, manager, mh)
    own = certs.good("other")
    await manager.add_worker(own.cert_pem().decode(), enable=True)
    other = new_agent()
    assert (await peer.heartbeat(own, other)).status == 200
    answer = await peer.heartbeat(own, victim)
    assert answer.status == 409 and victim in answer.text and other in answer.text
    lease = await peer.request(own, "POST", routes.WORKER_LEASE, body=lease_body(victim))
    assert lease.status == 403 and f"may not act for agent {victim!r}" in lease.text


async def test_the_admin_certificate_cannot_register_as_a_worker(
    mh: MasterHome, manager: ManagerClient, peer: Peer
) -> None:
    victim = await _victim(peer, manager, mh)
    answer = await peer.heartbeat(mh.admin, victim)
    assert answer.status == 403 and "not to a worker" in answer.text and mh.admin.thumbprint in answer.text


@pytest.mark.parametrize("how", ["root", "pending"])
async def test_a_new_registration_is_disabled_until_enabled(
    mh: MasterHome,
    master: MasterServer,
    manager: ManagerClient,
    peer: Peer,
    certs: CertFactory,
    how: str,
) -> None:
    cred = certs.good("newcomer")
    if how == "root":
        await _trust_by_hand(master, mh, cred)
    else:
        await manager.add_worker(cred.cert_pem().decode())
    agent = new_agent()
    answer = await peer.heartbeat(cred, agent)
    assert answer.status == 200 and answer.body["state"] == "disabled"
    assert f"packfleet manager worker enable {agent}" in answer.body["message"]
    lease = await peer.request(cred, "POST", routes.WORKER_LEASE, body=lease_body(agent))
    assert lease.status == 403 and "is disabled" in lease.text and "worker enable" in lease.text


async def test_refused_binds_are_audited_once_and_shown_by_doctor_and_health(
    mh: MasterHome, master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    victim = await _victim(peer, manager, mh)
    intruder = certs.good("intruder")
    await _trust_by_hand(master, mh, intruder)
    for _ in range(3):
        assert (await peer.heartbeat(intruder, victim)).status == 409
    audit = await _audit(manager, "certificate.bind-refused")
    assert [(r["target"], r["details"]["agent_id"]) for r in audit] == [(intruder.thumbprint, victim)]
    health = await peer.request(intruder, "GET", routes.HEALTH)
    confirm = f"packfleet manager worker connect {victim} --cert {intruder.thumbprint}"
    assert health.body["refused_bind"]["agent_id"] == victim and confirm in health.body["refused_bind"]["fix"]
    findings = [
        f for f in check_master(mh.home, now=datetime.now(UTC), probe=False) if f.check == "master.bindings"
    ]
    assert findings and confirm in (findings[0].fix or "") and intruder.thumbprint in findings[0].message


async def test_the_administrator_confirms_a_refused_certificate_by_thumbprint(
    mh: MasterHome, master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    """The seed's manual "change the worker certificate", with its one confirmation."""
    victim = await _victim(peer, manager, mh)
    successor = certs.good("worker1")
    await _trust_by_hand(master, mh, successor)
    assert (await peer.heartbeat(successor, victim)).status == 409
    result = await manager.connect_worker(victim, thumbprint=successor.thumbprint)
    assert result["retired"] == [mh.worker.thumbprint]
    answer = await peer.heartbeat(successor, victim)
    assert answer.status == 200 and answer.body["state"] == "enabled"
    # The replaced certificate left the Root store: its handshake is refused.
    await peer.refused_handshake(mh.worker)
    actions = [r["action"] for r in await _audit(manager, "worker.connect")]
    assert actions == ["worker.connect"]


async def test_confirming_an_unknown_thumbprint_is_refused_by_name(
    mh: MasterHome, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    victim = await _victim(peer, manager, mh)
    ghost = certs.good("ghost").thumbprint
    with pytest.raises(Exception, match=f"certificate {ghost} is neither in the catalog") as caught:
        await manager.connect_worker(victim, thumbprint=ghost)
    assert getattr(caught.value, "status", None) == 404


async def test_add_with_worker_binds_a_second_certificate_to_the_named_worker_only(
    mh: MasterHome, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    victim = await _victim(peer, manager, mh)
    second = certs.good("worker1-b")
    record = await manager.add_worker(second.cert_pem().decode(), worker=victim)
    assert record["agent_id"] == victim
    assert (await peer.heartbeat(second, victim)).body["state"] == "enabled"
    intruder_agent = new_agent()
    answer = await peer.heartbeat(second, intruder_agent)
    assert answer.status == 409 and victim in answer.text
    binds = await _audit(manager, "certificate.bind")
    assert any(r["target"] == second.thumbprint and r["details"]["agent_id"] == victim for r in binds)


async def test_add_with_an_unknown_worker_is_refused_and_trusts_nothing(
    mh: MasterHome, manager: ManagerClient, certs: CertFactory
) -> None:
    cred = certs.good("orphan")
    with pytest.raises(Exception, match="no worker has the agent id, thumbprint or name 'nobody'"):
        await manager.add_worker(cred.cert_pem().decode(), worker="nobody")
    assert not CertStore(mh.home, "Root").contains(cred.thumbprint)


# --- join-token abuse -------------------------------------------------------------------------------


async def _join_body(
    peer: Peer, token_text: str, cred: Credential, agent: str, *, signer: Credential | None = None
) -> dict[str, Any]:
    token = parse_join_token(token_text)
    issued = (await peer.request(None, "GET", routes.JOIN)).body["issued_at"]
    key = (signer or cred).private_key
    assert key is not None
    proof = join_proof_message(token.token_id, issued, cred.sha256, agent)
    return {
        "token_id": token.token_id,
        "secret": token.secret_text,
        "cert_pem": cred.cert_pem().decode(),
        "agent_id": agent,
        "display_name": "joiner",
        "issued_at": issued,
        "signature": base64.b64encode(sign_proof(key, proof)).decode(),
    }


async def _token(manager: ManagerClient, master: MasterServer, **kwargs: Any) -> str:
    created = await manager.create_token(endpoint=f"https://127.0.0.1:{master.port}", **kwargs)
    return str(created["token"])


async def test_an_unbound_join_token_cannot_claim_an_existing_worker(
    mh: MasterHome, master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    victim = await _victim(peer, manager, mh)
    token = await _token(manager, master, enable=True)
    intruder = certs.good("intruder")
    answer = await peer.request(
        None, "POST", routes.JOIN, body=await _join_body(peer, token, intruder, victim)
    )
    assert answer.status == 403 and f"agent id {victim} is already worker" in answer.text
    assert f"packfleet manager worker connect {victim} --token" in answer.text
    assert not CertStore(mh.home, "Root").contains(intruder.thumbprint)


async def test_a_join_token_with_a_wrong_secret_is_refused(
    master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    token = await _token(manager, master)
    body = await _join_body(peer, token, certs.good("j"), new_agent())
    body["secret"] = "A" * len(body["secret"])
    answer = await peer.request(None, "POST", routes.JOIN, body=body)
    assert answer.status == 403 and "its secret is wrong" in answer.text and "token create" in answer.text


async def test_a_revoked_join_token_is_refused(
    master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    token = await _token(manager, master)
    await manager.revoke_token(parse_join_token(token).token_id)
    answer = await peer.request(
        None, "POST", routes.JOIN, body=await _join_body(peer, token, certs.good("j"), new_agent())
    )
    assert answer.status == 403 and "was revoked" in answer.text


async def test_an_expired_join_token_is_refused_naming_expiry_and_the_fix(
    mh: MasterHome, master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    token = await _token(manager, master, ttl_seconds=1)
    token_id = parse_join_token(token).token_id

    async def status() -> str:
        return str(next(t["status"] for t in await manager.list_tokens() if t["token_id"] == token_id))

    assert await status() == "usable"
    # Bounded wait on what the master itself says, not on a sleep tuned to this machine.
    deadline = time.monotonic() + 30.0
    while await status() != "expired":
        assert time.monotonic() < deadline, "the 1 s token never expired"
        await asyncio.sleep(0.2)
    joiner = certs.good("late-joiner")
    answer = await peer.request(
        None, "POST", routes.JOIN, body=await _join_body(peer, token, joiner, new_agent())
    )
    assert answer.status == 403, answer.text
    assert f"join token {token_id} expired at" in answer.text
    assert "packfleet manager token create" in answer.body["fix"]
    assert not CertStore(mh.home, "Root").contains(joiner.thumbprint)


async def test_a_used_join_token_admits_no_second_certificate(
    master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    token = await _token(manager, master)
    first = await peer.request(
        None, "POST", routes.JOIN, body=await _join_body(peer, token, certs.good("a"), new_agent())
    )
    assert first.status == 200, first.text
    second = await peer.request(
        None, "POST", routes.JOIN, body=await _join_body(peer, token, certs.good("b"), new_agent())
    )
    assert second.status == 403 and "is used up" in second.text


async def test_a_join_without_the_certificates_key_is_refused(
    master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    token = await _token(manager, master)
    stolen = certs.good("stolen")
    body = await _join_body(peer, token, stolen, new_agent(), signer=certs.good("thief"))
    answer = await peer.request(None, "POST", routes.JOIN, body=body)
    assert answer.status == 403 and f"private key of certificate {stolen.thumbprint}" in answer.text


async def test_a_replayed_join_proof_from_yesterday_is_refused(
    master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    token = await _token(manager, master)
    cred = certs.good("late")
    parsed = parse_join_token(token)
    agent = new_agent()
    issued = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert cred.private_key is not None
    proof = join_proof_message(parsed.token_id, issued, cred.sha256, agent)
    body = await _join_body(peer, token, cred, agent)
    body |= {"issued_at": issued, "signature": base64.b64encode(sign_proof(cred.private_key, proof)).decode()}
    answer = await peer.request(None, "POST", routes.JOIN, body=body)
    assert answer.status == 403 and "the join proof was signed for" in answer.text


async def test_a_joined_worker_without_enable_is_disabled(
    master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    token = await _token(manager, master)
    cred, agent = certs.good("joiner"), new_agent()
    answer = await peer.request(None, "POST", routes.JOIN, body=await _join_body(peer, token, cred, agent))
    assert answer.status == 200 and answer.body["enabled"] is False
    assert f"packfleet manager worker enable {agent}" in answer.body["message"]
    lease = await peer.request(cred, "POST", routes.WORKER_LEASE, body=lease_body(agent))
    assert lease.status == 403 and "is disabled" in lease.text


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("ttl_seconds", 1e300, "ttl_seconds must be more than 0"),
        ("ttl_seconds", -5, "ttl_seconds must be more than 0"),
        ("uses", 10**12, "uses must be 1..10000"),
    ],
    ids=["huge-ttl", "negative-ttl", "huge-uses"],
)
async def test_out_of_range_token_requests_are_a_400_never_a_500(
    mh: MasterHome, peer: Peer, field: str, value: float, says: str
) -> None:
    body: dict[str, Any] = {"endpoint": peer.url, field: value}
    answer = await peer.request(mh.admin, "POST", routes.ADMIN_TOKENS, body=body)
    assert answer.status == 400 and says in answer.text
