"""The master's services called directly, as the web console calls them: the same effects as the admin
routes, and blocking work that is not the catalog's kept off the catalog's executor."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
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
from packfleet.catalog import Catalog
from packfleet.errors import Conflict, InvalidValue, NotFound, PackfleetError, TransportError
from packfleet.master import MasterServer
from packfleet.master._services import CatalogOnlyState, Services, off_catalog
from packfleet.master._sharedtrust import sync_trust
from packfleet.pki import CertStore, create_self_signed
from packfleet.protocol import CreateIdentity, ExecutionStatus, RunPackage, routes


def _services(server: MasterServer) -> Services:
    assert server.services is not None
    return server.services


async def _register(mh: MasterHome, server: MasterServer, tmp_path: Path) -> str:
    agent = new_agent_id()
    async with client_for(mh.worker, mh, server, tmp_path / "w") as worker:
        await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    return agent


async def test_disabling_a_worker_closes_its_connections_and_refuses_its_next_lease(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    services = _services(server)
    agent = await _register(mh, server, tmp_path)
    enabled = await services.workers.set_enabled(agent, True, actor="test")
    assert enabled.is_enabled and services.workers.view(enabled)["state"] == "online"
    async with client_for(mh.worker, mh, server, tmp_path / "w2") as worker:
        lease = {"agent_id": agent, "capacity": 1, "wait_seconds": 0, "lease_seconds": 60}
        assert await worker.request("POST", routes.WORKER_LEASE, json_body=lease) == {"tasks": []}
        await services.workers.set_enabled(agent, False, actor="test", reason="maintenance")
        with pytest.raises(TransportError):  # its connection was cut, and the new one is refused
            await worker.request("POST", routes.WORKER_LEASE, json_body=lease)
    entries = await services.audit.list(limit=100, newest=True)
    assert any(e.action == "worker.disable" and e.target == agent for e in entries)


async def test_a_submit_with_a_key_is_carried_out_once(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    services = _services(server)
    await services.projects.deploy("default", project_archive(tmp_path), actor="test")
    ask = RunPackage("default", "etl", "load", {"rows": "3", "password": "s3cret"}, idempotency_key="k-1")
    first = await services.executions.submit(ask, actor="alice")
    again = await services.executions.submit(ask, actor="alice")
    other = await services.executions.submit(ask, actor="bob")  # keys are per principal
    assert first.created and not again.created and other.created
    assert again.execution.execution_id == first.execution.execution_id != other.execution.execution_id
    shown = await services.executions.shown(first.execution)
    assert shown["parameters"] == {"rows": 3, "password": "********"}
    page = await services.executions.events(first.execution.execution_id, wait=0)
    assert (page.events, page.last_id) == ([], 0) and page.execution.status == ExecutionStatus.PENDING
    canceled = await services.executions.cancel(first.execution.execution_id, actor="alice")
    assert canceled.status in (ExecutionStatus.CANCELED, ExecutionStatus.STOPPING)


async def test_bad_values_are_invalid_before_anything_is_written(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    services = _services(server)
    await services.projects.deploy("default", project_archive(tmp_path), actor="test")
    before = len(await services.executions.list(limit=100))
    with pytest.raises(InvalidValue, match="retry_count"):
        await services.executions.submit(RunPackage("default", "etl", "load", retry_count=-1), actor="a")
    with pytest.raises(InvalidValue, match="nobody"):
        await services.executions.submit(RunPackage("default", "etl", "load", workers=["nobody"]), actor="a")
    assert len(await services.executions.list(limit=100)) == before
    with pytest.raises(InvalidValue, match="ttl_seconds"):
        await services.tokens.create(actor="a", ttl_seconds=0)
    assert await services.tokens.list() == []
    with pytest.raises(NotFound):
        await services.workers.get("nobody")


async def test_a_token_made_for_a_worker_is_bound_and_revocable(
    mh: MasterHome, server: MasterServer, clock: FakeClock, tmp_path: Path
) -> None:
    services = _services(server)
    agent = await _register(mh, server, tmp_path)
    made = await services.tokens.create(
        actor="test", worker=agent, endpoint=f"https://127.0.0.1:{server.port}", uses=2
    )
    assert made.token.startswith("pfjoin1.") and made.agent_id == agent
    ((record, binding),) = await services.tokens.list()
    assert services.tokens.view(record, binding)["status"] == "usable" and binding.agent_id == agent
    revoked, _ = await services.tokens.revoke(record.token_id, actor="test")
    assert services.tokens.view(revoked, binding)["status"] == "revoked"


async def test_deleting_a_worker_takes_its_certificate_out_of_the_root_store(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    services = _services(server)
    agent = await _register(mh, server, tmp_path)
    root = mh.home / "certs" / "Root" / f"{mh.worker.thumbprint}.cer"
    assert root.exists()
    result = await services.workers.delete(agent, actor="test")
    assert result["removed_from_root"] == [mh.worker.thumbprint] and not root.exists()
    inventory = await services.fleet.certificates()
    assert {e["role"] for e in inventory} >= {"master", "admin"}


class _CountingExecutor:
    """The catalog's executor, counting what is handed to it."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.calls: list[str] = []
        #: What was handed over that is not a method of a catalog (``state.db`` wraps each call in
        #: a ``functools.partial``).
        self.not_catalog: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls.append(getattr(fn, "__name__", repr(fn)))
        target = fn.func if isinstance(fn, functools.partial) else fn
        if not isinstance(getattr(target, "__self__", None), Catalog):
            self.not_catalog.append(getattr(target, "__qualname__", repr(target)))
        return self.inner.submit(fn, *args, **kwargs)


async def test_work_that_is_not_the_catalogs_runs_off_its_executor(server: MasterServer) -> None:
    state = server.state

    def where() -> str:
        return threading.current_thread().name

    assert not (await off_catalog(where)).startswith("packfleet-catalog")
    split = CatalogOnlyState(state)
    counting = _CountingExecutor(state.executor)
    state.executor = counting  # type: ignore[assignment]
    try:
        assert not (await split.db(where)).startswith("packfleet-catalog")
        assert counting.calls == []  # a store write or a key generation never queues there
        await split.db(state.catalog.ping)  # the catalog's own methods still do
        assert len(counting.calls) == 1
    finally:
        state.executor = counting.inner  # type: ignore[assignment]
    assert split.home == state.home  # everything else is the state's


async def test_identities_and_root_store_changes_send_only_catalog_calls_to_its_executor(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    services, state = _services(server), server.state
    agent = await _register(mh, server, tmp_path)
    auditor = create_self_signed(["auditor"])
    root = CertStore(mh.home, "Root")
    counting = _CountingExecutor(state.executor)
    state.executor = counting  # type: ignore[assignment]
    try:
        ask = CreateIdentity("auditor", "viewer", public(auditor).cert_pem().decode())
        pinned = await services.identities.create(ask, actor="test")
        listed = {row["name"]: row for row in await services.identities.list()}
        assert root.contains(auditor.thumbprint)
        revoked = await services.identities.revoke("auditor", actor="test")
        deleted = await services.workers.delete(agent, actor="test")
        await sync_trust(state)
    finally:
        state.executor = counting.inner  # type: ignore[assignment]
    assert pinned["name"] == "auditor" and pinned["not_after"] == auditor.info().not_after.isoformat()
    assert "password_hash" not in pinned and listed["auditor"]["not_after"] == pinned["not_after"]
    assert revoked == {"name": "auditor", "role": "viewer", "thumbprint": auditor.thumbprint, "revoked": True}
    assert deleted["removed_from_root"] == [mh.worker.thumbprint]
    assert not root.contains(auditor.thumbprint) and not root.contains(mh.worker.thumbprint)
    assert counting.calls and counting.not_catalog == []  # store files went elsewhere
    actions = [e.action for e in await services.audit.list(limit=100, newest=True)]
    assert {"principal.add", "principal.remove", "worker.delete"} <= set(actions)


async def test_an_identity_request_is_checked_by_the_protocols_rule_before_anything_is_written(
    server: MasterServer,
) -> None:
    services = _services(server)
    cert = public(create_self_signed(["x"])).cert_pem().decode()
    with pytest.raises(InvalidValue, match="role 'owner' is not one of admin, executor, viewer"):
        await services.identities.create(CreateIdentity("x", "owner", cert), actor="test")
    with pytest.raises(InvalidValue, match="not a usable identity name"):
        await services.identities.create(CreateIdentity("a/b", "viewer", cert), actor="test")
    with pytest.raises(InvalidValue, match="cert_pem"):
        await services.identities.create(CreateIdentity("x", "viewer", "not a certificate"), actor="test")
    with pytest.raises(Conflict, match="lock this manager out"):
        await services.identities.revoke("admin", actor="test", own="admin")
    assert [row["name"] for row in await services.identities.list()] == ["admin"]


async def test_pending_explains_a_waiting_execution_worker_by_worker(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    services = _services(server)
    agent = await _register(mh, server, tmp_path)  # registered, not enabled
    await services.projects.deploy("default", project_archive(tmp_path), actor="test")
    submitted = await services.executions.submit(RunPackage("default", "etl", "load"), actor="test")
    explained = await services.pending.explain(submitted.execution.execution_id)
    assert explained["pending"] and explained["ready"] == []
    assert any(f"packfleet manager worker enable {agent}" in r for r in explained["reasons"])
    await services.workers.set_enabled(agent, True, actor="test")
    explained = await services.pending.explain(submitted.execution.execution_id)
    assert explained["ready"] == [f"worker1 ({agent})"] and explained["reasons"] == []


def _catalog_calls(server: MasterServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each catalog call the master makes from now on, in order."""
    calls: list[str] = []
    real = server.state.db

    async def counted(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(call.__name__)
        return await real(call, *args, **kwargs)

    monkeypatch.setattr(server.state, "db", counted)
    return calls


async def test_a_submit_of_a_known_project_is_one_catalog_call(
    server: MasterServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executions = _services(server).executions
    projects = _services(server).projects
    await projects.deploy("default", project_archive(tmp_path), actor="test")
    calls = _catalog_calls(server, monkeypatch)
    ask = RunPackage("default", "etl", "load", {"rows": "3", "password": "s3cret"})
    await executions.submit(ask, actor="alice")
    assert calls == ["get_project_version", "submit_execution"]  # the version, read once
    calls.clear()
    second = await executions.submit(ask, actor="alice")
    keyed = RunPackage("default", "etl", "load", {"rows": "4"}, idempotency_key="k-1")
    first_keyed = await executions.submit(keyed, actor="alice")
    again = await executions.submit(keyed, actor="alice")
    assert calls == ["submit_execution"] * 3
    assert second.created and first_keyed.created and not again.created
    assert again.execution == first_keyed.execution
    shown = await executions.shown(second.execution)  # masked from the manifest in memory
    assert shown["parameters"] == {"rows": 3, "password": "********"} and len(calls) == 3

    # A deploy (here, or by another master): the catalog refuses the old version; read it again.
    calls.clear()
    newer = await projects.deploy("default", project_archive(tmp_path), actor="test")
    calls.clear()
    third = await executions.submit(ask, actor="alice")
    assert calls == ["submit_execution", "get_project_version", "submit_execution"]
    assert third.execution.project_version_id == newer.id != second.execution.project_version_id
    calls.clear()
    await executions.submit(ask, actor="alice")
    assert calls == ["submit_execution"]


async def test_a_known_project_refuses_a_bad_submit_in_the_same_words(
    server: MasterServer, tmp_path: Path
) -> None:
    """The master's memory of the newest version changes no error: each is the checked path's."""
    from packfleet.master._services._executions import ExecutionService

    services = _services(server)
    await services.projects.deploy("default", project_archive(tmp_path), actor="test")
    warm = services.executions
    await warm.submit(RunPackage("default", "etl", "load", {}), actor="alice")
    bad = [
        RunPackage("default", "etl", "transform", {}),
        RunPackage("default", "etl", "load", {"rowz": "3"}),
        RunPackage("default", "etl", "load", {"rows": "many"}),
        RunPackage("default", "etl", "load", {}, workers=["nobody"]),
        RunPackage("default", "nope", "load", {}),
    ]
    for ask in bad:
        messages = []
        for service in (warm, ExecutionService(server.state)):  # with and without the memory
            with pytest.raises(PackfleetError) as caught:
                await service.submit(ask, actor="alice")
            messages.append((type(caught.value), caught.value.message, caught.value.fix))
        assert messages[0] == messages[1], ask
