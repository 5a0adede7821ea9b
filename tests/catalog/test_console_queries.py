"""What the web console reads and keeps: console users, filtered and paged executions and audit,
the queue, and counts since a time (on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from packfleet.catalog import Catalog, ExecutionStatus
from packfleet.errors import Conflict, InvalidValue, NotFound

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
