"""What the web console reads and keeps: console users, filtered and paged executions and audit,
the queue, and counts since a time (on SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from packfleet.catalog import Catalog, EventInput, ExecutionStatus, WorkerInfo
from packfleet.errors import Conflict, InvalidValue, NotFound
from packfleet.pki import create_self_signed

from .conftest import FakeClock

Register = Callable[..., str]


def test_console_users_are_kept_with_their_role_and_every_change_audited(
    catalog: Catalog, clock: FakeClock
) -> None:
    added = catalog.add_user("alice", "operator", "$argon2id$v=19$first", actor="cli:root")
    assert (added.role, added.password_hash) == ("operator", "$argon2id$v=19$first")
    assert "password_hash" not in added.to_dict()
    with pytest.raises(Conflict, match="already exists"):
        catalog.add_user("alice", "viewer", "$argon2id$x", actor="cli:root")
    with pytest.raises(InvalidValue, match="not one of viewer, operator, admin"):
        catalog.add_user("bob", "root", "$argon2id$x", actor="cli:root")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="printable"):
        catalog.add_user(" bob", "viewer", "$argon2id$x", actor="cli:root")
    clock.advance(60)
    changed = catalog.set_user_password("alice", "$argon2id$v=19$second", actor="cli:root", role="admin")
    assert (changed.role, changed.password_hash) == ("admin", "$argon2id$v=19$second")
    assert changed.updated_at > added.updated_at, "a change moves updated_at: older sessions end"
    catalog.add_user("carol", "viewer", "$argon2id$x", actor="cli:root")
    assert [u.name for u in catalog.list_users()] == ["alice", "carol"]
    catalog.delete_user("alice", actor="cli:root")
    with pytest.raises(NotFound, match="packfleet manager user list"):
        catalog.get_user("alice")
    audit = catalog.list_audit(action="user")
    assert [(a.action, a.target) for a in audit] == [
        ("user.add", "alice"),
        ("user.passwd", "alice"),
        ("user.add", "carol"),
        ("user.delete", "alice"),
    ]


def test_executions_filter_and_page_and_the_queue_is_summed(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker("worker1")
    first = deployed.create_execution("default", "etl", "extract", parameters={}, actor="alice")
    clock.advance(10)
    ids = [
        deployed.create_execution("default", "etl", "extract", parameters={}, actor="bob").execution_id
        for _ in range(4)
    ]
    assert deployed.queue_summary() == (5, first.created_at)
    [leased] = deployed.lease_tasks(agent_id, 1, 60)
    assert leased.execution_id == first.execution_id
    assert deployed.queue_summary()[0] == 4
    assert [r.execution_id for r in deployed.list_executions(created_by="bob", limit=2)] == ids[::-1][:2]
    assert [r.execution_id for r in deployed.list_executions(created_by="bob", limit=2, offset=2)] == ids[
        ::-1
    ][2:]
    assert [r.execution_id for r in deployed.list_executions(agent_id=agent_id)] == [first.execution_id]
    assert deployed.list_executions(folder="other") == []
    assert len(deployed.list_executions(folder="default", project="etl", package="extract")) == 5
    clock.advance(3600)
    deployed.create_execution("default", "etl", "extract", parameters={}, actor="bob")
    recent = deployed.execution_counts(since=clock.now - timedelta(minutes=1))
    assert recent[ExecutionStatus.PENDING] == 1 and sum(recent.values()) == 1
    assert sum(deployed.execution_counts().values()) == 6


def test_the_audit_log_filters_by_who_what_and_target_and_pages_backwards(catalog: Catalog) -> None:
    for i in range(5):
        catalog.audit("admin", "worker.enable", f"w{i}")
    catalog.audit("console:otto", "worker.disable", "w1", {"reason": "disk"})
    catalog.audit("admin", "workerx.other", "w1")
    assert [a.action for a in catalog.list_audit(action="worker")] == ["worker.enable"] * 5 + [
        "worker.disable"
    ]
    assert [a.target for a in catalog.list_audit(actor="console:otto")] == ["w1"]
    assert len(catalog.list_audit(target="w1")) == 3
    newest = catalog.list_audit(newest=True, limit=2, action="worker.enable")
    assert [a.target for a in newest] == ["w3", "w4"]
    older = catalog.list_audit(newest=True, limit=2, action="worker.enable", before_id=newest[0].id)
    assert [a.target for a in older] == ["w1", "w2"]


def _online(catalog: Catalog, agent_id: str, *, running: int = 0) -> None:
    """A heartbeat of an existing worker now (its certificate is its first one)."""
    worker = catalog.get_worker(agent_id)
    beat = WorkerInfo(agent_id, worker.display_name, "m", "svc", (), 1.0, 1.0, running, "0.1.0")
    catalog.worker_heartbeat(worker.certificates[0].thumbprint, beat)


def test_a_page_of_workers_is_filtered_sorted_worst_first_and_counted_in_the_query(
    catalog: Catalog, worker: Register, clock: FakeClock
) -> None:
    window = timedelta(minutes=3)
    gone = worker("gone-enabled")  # its heartbeat ages past the window
    off = worker("gone-disabled", enabled=False)
    clock.advance(600)
    idle = worker("idle-disabled", enabled=False)
    busy = worker("busy")
    _online(catalog, busy, running=3)
    ok = worker("fine")
    catalog.update_worker(ok, actor="admin", tags="gpu, eu")
    page = catalog.worker_page(now=clock.now, online_window=window)
    # Worst first: offline but enabled, offline and disabled, online but disabled, online and enabled.
    assert [w.agent_id for w in page.workers][:3] == [gone, off, idle]
    assert set(w.agent_id for w in page.workers[3:]) == {busy, ok}
    assert page.total == 5
    assert (
        catalog.worker_page(now=clock.now, online_window=window, sort="state", descending=True)
        .workers[-1]
        .agent_id
        == gone
    )
    ran = catalog.worker_page(now=clock.now, online_window=window, sort="running", descending=True)
    assert ran.workers[0].agent_id == busy
    assert [
        w.display_name for w in catalog.worker_page(now=clock.now, online_window=window, sort="name").workers
    ] == [
        "busy",
        "fine",
        "gone-disabled",
        "gone-enabled",
        "idle-disabled",
    ]
    online = catalog.worker_page(now=clock.now, online_window=window, state="online")
    assert {w.agent_id for w in online.workers} == {idle, busy, ok} and online.total == 3
    disabled = catalog.worker_page(now=clock.now, online_window=window, state="disabled")
    assert {w.agent_id for w in disabled.workers} == {off, idle}
    # Search: name, tags, agent id and a certificate thumbprint, case-insensitive; % is literal.
    assert [
        w.agent_id for w in catalog.worker_page(now=clock.now, online_window=window, search="GPU").workers
    ] == [ok]
    assert catalog.worker_page(now=clock.now, online_window=window, search=busy[:8]).total == 1
    thumbprint = catalog.get_worker(idle).certificates[0].thumbprint
    assert [
        w.agent_id
        for w in catalog.worker_page(now=clock.now, online_window=window, search=thumbprint.lower()).workers
    ] == [idle]
    assert catalog.worker_page(now=clock.now, online_window=window, search="%").total == 0
    # Paging: limit and offset in the query, the total of every match.
    second = catalog.worker_page(now=clock.now, online_window=window, sort="name", limit=2, offset=2)
    assert [w.display_name for w in second.workers] == ["gone-disabled", "gone-enabled"] and second.total == 5
    assert all(w.certificates for w in second.workers), "each worker comes with its certificates"
    assert catalog.worker_counts(now=clock.now, online_window=window) == {
        (False, True): 1,
        (False, False): 1,
        (True, False): 1,
        (True, True): 2,
    }
    with pytest.raises(InvalidValue, match="not one of"):
        catalog.worker_page(now=clock.now, online_window=window, sort="bogus")
    with pytest.raises(InvalidValue, match="not one of"):
        catalog.worker_page(now=clock.now, online_window=window, state="bogus")
    names = catalog.worker_names()
    assert [n[1] for n in names] == sorted(n[1] for n in names) and len(names) == 5


def test_the_certificate_sort_puts_the_soonest_expiry_first(catalog: Catalog, clock: FakeClock) -> None:
    window = timedelta(minutes=3)
    agents = {}
    for name, days in (("long", 300), ("short", 5), ("middle", 60)):
        agent_id = str(uuid.uuid4())
        pem = create_self_signed([name], days=days).cert_pem()
        cert = catalog.add_worker_certificate(pem, actor="admin", enable=True)
        catalog.worker_heartbeat(cert.thumbprint, WorkerInfo(agent_id, name, "m", "svc"))
        agents[name] = agent_id
    page = catalog.worker_page(now=clock.now, online_window=window, sort="cert")
    assert [w.display_name for w in page.workers] == ["short", "middle", "long"]


def test_event_windows_read_the_head_the_tail_and_any_window_and_count_per_attempt(
    deployed: Catalog, worker: Register
) -> None:
    agent_id = worker("worker1")
    execution = deployed.create_execution("default", "etl", "extract", parameters={}, actor="alice")
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    now = datetime.now(UTC)
    events = [
        EventInput(
            execution.execution_id,
            task.task_id,
            task.attempt,
            seq,
            now,
            logging.INFO,
            "stdout",
            f"line {seq}",
        )
        for seq in range(1, 1201)
    ]
    assert deployed.add_events(agent_id, events) == 1200
    assert deployed.count_events(execution.execution_id) == 1200
    assert deployed.count_events(execution.execution_id + 1) == 0
    head = deployed.event_window(execution.execution_id, offset=0, limit=500)
    assert [e.message for e in head[:2]] == ["line 1", "line 2"] and len(head) == 500
    tail = deployed.event_window(execution.execution_id, offset=-500, limit=500)
    assert [e.message for e in tail[-2:]] == ["line 1199", "line 1200"] and tail[0].message == "line 701"
    middle = deployed.event_window(execution.execution_id, offset=500, limit=500)
    assert middle[0].message == "line 501" and middle[-1].message == "line 1000"
    assert [e.message for e in deployed.event_window(execution.execution_id, offset=1000, limit=500)][-1] == (
        "line 1200"
    )
    assert deployed.event_attempts(execution.execution_id) == [((task.task_id, task.attempt), 1200)]


def test_the_newest_audit_id_moves_with_every_change(catalog: Catalog) -> None:
    assert catalog.last_audit_id() == 0
    catalog.audit("admin", "worker.enable", "w1")
    first = catalog.last_audit_id()
    catalog.add_worker_certificate(create_self_signed(["w2"]).cert_pem(), actor="admin")
    assert catalog.last_audit_id() > first


def test_the_dashboard_counts_are_bounded_and_exact_below_the_cap(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker("worker1")
    first = deployed.create_execution("default", "etl", "extract", parameters={}, actor="alice")
    clock.advance(10)
    for _ in range(4):
        deployed.create_execution("default", "etl", "extract", parameters={}, actor="bob")
    assert deployed.queue_depth(cap=10) == (5, first.created_at)
    assert deployed.queue_depth(cap=3) == (4, first.created_at), "past the cap: cap + 1"
    deployed.lease_tasks(agent_id, 1, 60)
    assert deployed.queue_depth(cap=10)[0] == 4
    since = clock.now - timedelta(seconds=5)
    recent = deployed.recent_counts(since=since, cap=10)
    assert recent[ExecutionStatus.PENDING] == 4 and sum(recent.values()) == 4, "the first is older"
    assert deployed.recent_counts(since=since, cap=2)[ExecutionStatus.PENDING] == 3
    everything = deployed.recent_counts(since=clock.now - timedelta(days=1), cap=100)
    assert everything == deployed.execution_counts(since=clock.now - timedelta(days=1))
