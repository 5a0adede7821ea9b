"""The typed admin contract against a real master: the master's error classes survive the wire, the
answers are protocol messages that declare every field the master sends, and "online" is the
master's verdict on the master's clock."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from master.support import (
    FakeClock,
    MasterHome,
    client_for,
    heartbeat_body,
    new_agent_id,
    project_archive,
    public,
)
from packfleet.errors import (
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    Refused,
    RemoteConflict,
    RemoteError,
    RemoteNotFound,
    TransportError,
)
from packfleet.manager import ManagerClient, answered_error
from packfleet.master import MasterServer
from packfleet.pki import create_self_signed
from packfleet.protocol import (
    AdminAnswer,
    AuditEntry,
    CertificateEntry,
    EventPage,
    Execution,
    ExecutionStatus,
    Health,
    Identity,
    JoinTokenView,
    PendingExplanation,
    ProjectVersion,
    RefusedBind,
    RotationStatus,
    TrustedCertificate,
    Worker,
    routes,
)


async def _register(mh: MasterHome, server: MasterServer, tmp_path: Path) -> str:
    agent = new_agent_id()
    async with client_for(mh.worker, mh, server, tmp_path / "w") as worker:
        await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    return agent


async def test_a_missing_record_is_the_masters_not_found_not_a_transport_error(
    manager: ManagerClient,
) -> None:
    with pytest.raises(NotFound) as caught:
        await manager.get_worker("nobody")
    error = caught.value
    assert isinstance(error, RemoteNotFound) and isinstance(error, RemoteError)
    assert not isinstance(error, TransportError)  # a retry loop on transport errors leaves it alone
    assert error.status == 404 and error.problem_type == "urn:packfleet:problem:not-found"
    assert (error.method, error.path) == ("GET", "/api/v1/admin/workers/nobody")
    assert error.exit_code == 2  # as docs/exit-codes.md says of a 4xx, not the catalog's 6
    with pytest.raises(NotFound):
        await manager.get_execution(987654)


async def test_a_broken_invariant_is_the_masters_conflict(manager: ManagerClient) -> None:
    with pytest.raises(Conflict) as caught:
        await manager.rotate_master_cert("finish")  # no rotation is under way
    assert isinstance(caught.value, RemoteConflict) and caught.value.status == 409
    assert "no master certificate rotation is under way" in caught.value.message
    assert caught.value.fix


async def test_a_role_that_may_not_is_refused_with_the_presented_thumbprint(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    viewer = create_self_signed(["auditor"])
    await manager.create_identity("auditor", "viewer", public(viewer).cert_pem().decode())
    async with ManagerClient(client_for(viewer, mh, server, tmp_path / "v", role="manager")) as reader:
        assert isinstance(await reader.list_workers(), list)  # a viewer reads
        with pytest.raises(Refused) as caught:
            await reader.create_token()
    error = caught.value
    assert error.status == 403 and error.exit_code == 4 and not isinstance(error, TransportError)
    assert error.thumbprint == viewer.thumbprint  # the problem document's members come along


async def test_a_malformed_request_is_a_bad_request_naming_the_field(
    manager: ManagerClient, tmp_path: Path
) -> None:
    await manager.deploy("default", project_archive(tmp_path))
    with pytest.raises(BadRequest, match="rows") as caught:
        await manager.run("default", "etl", "load", {"rows": "many"})
    assert caught.value.status == 400 and not isinstance(caught.value, TransportError)
    with pytest.raises(BadRequest, match="retry_count"):
        await manager.run("default", "etl", "load", retry_count=5000)


async def test_a_master_that_fails_stays_a_transport_error(mh: MasterHome, manager: ManagerClient) -> None:
    (mh.home / "bindings.json").write_text("{ not json")  # the master cannot read its own binding
    newcomer = create_self_signed(["w9"])
    with pytest.raises(TransportError) as caught:
        await manager.add_worker(public(newcomer).cert_pem().decode())
    assert isinstance(caught.value, ApiError) and caught.value.status >= 500


def test_only_the_masters_own_problem_documents_are_mapped() -> None:
    proxy = ApiError("Not Found", status=404, problem_type="about:blank", method="GET", path="/x")
    assert answered_error(proxy) is proxy  # a proxy's page says nothing of the master's records
    ours = ApiError("no worker", status=404, problem_type=routes.PROBLEM_TYPE_PREFIX + "not-found")
    assert isinstance(answered_error(ours), RemoteNotFound)
    unavailable = ApiError("catalog down", status=503, problem_type=routes.PROBLEM_TYPE_PREFIX + "x")
    assert answered_error(unavailable) is unavailable


def _undeclared(answer: AdminAnswer, raw: dict[str, Any] | None = None) -> set[str]:
    """Fields the master sent that the message type does not declare (nested messages too)."""
    raw = answer.wire() if raw is None else raw
    declared = {f.name for f in dataclasses.fields(answer)}  # type: ignore[arg-type]
    missing = {f"{type(answer).__name__}.{name}" for name in raw if name not in declared}
    for name in declared & set(raw):
        value, sent = getattr(answer, name), raw[name]
        pairs = zip(value, sent, strict=True) if isinstance(value, list) else [(value, sent)]
        for item, item_raw in pairs:
            if isinstance(item, AdminAnswer) and isinstance(item_raw, dict):
                missing |= _undeclared(item, item_raw)
    return missing


async def test_every_answer_is_a_protocol_message_declaring_all_the_master_sends(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, clock: FakeClock, tmp_path: Path
) -> None:
    agent = await _register(mh, server, tmp_path)
    deployed = await manager.deploy("default", project_archive(tmp_path))
    enabled = await manager.enable_worker(agent)
    execution = await manager.run("default", "etl", "load", {"rows": "3"}, workers=[agent])
    canceled = await manager.cancel(execution.execution_id)
    page = await manager.events(execution.execution_id, wait=1)
    token = await manager.create_token(endpoint=f"https://127.0.0.1:{server.port}")
    answers: list[AdminAnswer] = [
        deployed,
        *(await manager.list_projects()),
        enabled,
        *(await manager.list_workers()),
        await manager.get_worker(agent),
        execution,
        canceled,
        await manager.get_execution(execution.execution_id),
        *(await manager.list_executions()),
        page,
        token,
        *(await manager.list_tokens()),
        await manager.revoke_token(token.token_id),
        *(await manager.audit(limit=1000)),
    ]
    viewer = create_self_signed(["reader"])
    answers += [
        await manager.pending(execution.execution_id),
        *(await manager.certificates()),
        await manager.create_identity("reader", "viewer", public(viewer).cert_pem().decode()),
        *(await manager.list_identities()),
        await manager.revoke_identity("reader"),
        await manager.master_cert_rotation(),
    ]
    kinds = {type(a) for a in answers}
    assert kinds == {
        ProjectVersion,
        Worker,
        Execution,
        EventPage,
        JoinTokenView,
        AuditEntry,
        PendingExplanation,
        CertificateEntry,
        Identity,
        RotationStatus,
    }
    assert set().union(*(_undeclared(a) for a in answers)) == set()
    assert isinstance(page, EventPage) and page.finished and page.execution.code is ExecutionStatus.CANCELED
    assert canceled.code.label == "canceled" and canceled["status_name"] == "canceled"  # the wire, too
    assert token.token.startswith("pfjoin1.") and token.status == "usable"
    started = await manager.rotate_master_cert("start")
    assert started.phase == "announced" and started.new and _undeclared(started) == set()
    assert started.workers and _undeclared(started) == set()  # each worker's part, declared too
    aborted = await manager.rotate_master_cert("abort")
    assert aborted.aborted == started.new and _undeclared(aborted) == set()
    trusted = await manager.revoke_certificate(mh.worker.thumbprint)
    assert isinstance(trusted, TrustedCertificate) and trusted.status == "revoked"
    assert _undeclared(trusted) == set()


async def test_online_is_the_masters_verdict_on_its_own_clock(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, clock: FakeClock, tmp_path: Path
) -> None:
    agent = await _register(mh, server, tmp_path)
    (worker,) = await manager.list_workers()
    assert (worker.agent_id, worker.online, worker.state) == (agent, True, "online")
    # Only the master's clock moves: this process's clock says the heartbeat is seconds old.
    clock.advance(4 * 60)
    (worker,) = await manager.list_workers()
    assert (worker.online, worker.state) == (False, "offline")
    assert worker.offline_seconds is not None and worker.offline_seconds >= 240
    clock.advance(-4 * 60)  # seen a moment ago again: revoked is still never online
    revoked = await manager.revoke_certificate(mh.worker.thumbprint)
    assert revoked.agent_id == agent
    worker = await manager.get_worker(agent)
    assert (worker.state, worker.online) == ("revoked", False)


async def test_health_is_a_protocol_message_whose_wire_form_is_what_it_was(
    manager: ManagerClient, clock: FakeClock
) -> None:
    health = await manager.health()
    assert isinstance(health, Health) and _undeclared(health) == set()
    assert set(health.wire()) == {"status", "version", "time"}  # refused_bind only when there is one
    assert (health.status, health.time, health.refused_bind) == ("ok", clock().isoformat(), None)
    refused = RefusedBind(thumbprint="T", agent_id="a", detail="d", fix="f")
    built = Health(status="ok", version="1", time="t", refused_bind=refused)
    assert built.wire()["refused_bind"] == {"thumbprint": "T", "agent_id": "a", "detail": "d", "fix": "f"}
    assert Health.from_wire(built.wire()).refused_bind == refused
