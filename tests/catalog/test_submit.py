"""The master's submit: one transaction that confirms the version it was checked against."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from packfleet.catalog import Catalog, ExecutionRequest, TaskStatus
from packfleet.errors import NotFound, VersionChanged

from .conftest import MANIFEST, FakeClock, listening

Register = Callable[..., str]


def _request(
    catalog: Catalog, version_id: int, package: str = "extract", **kwargs: object
) -> ExecutionRequest:
    return ExecutionRequest("default", "etl", package, {"rows": 5}, project_version_id=version_id, **kwargs)  # type: ignore[arg-type]


def test_the_record_a_submit_answers_is_the_one_the_catalog_holds(
    deployed: Catalog, worker: Register
) -> None:
    """It is built from what was written, not read back: it must not differ from a read."""
    agents = sorted([worker("one"), worker("two")])
    version = deployed.get_project_version("default", "etl")
    request = ExecutionRequest(
        "default", "etl", "load", {"rows": 7, "note": None}, (agents[1].upper(), agents[0]), 2, version.id
    )
    record, created = deployed.submit_execution(request, actor="alice", idempotency_key="k-1", if_newest=True)
    assert created and record == deployed.get_execution(record.execution_id)
    assert record.allowed_workers == tuple(agents) and record.task is not None
    assert record.task.status == TaskStatus.READY
    plain = deployed.create_execution("default", "etl", "extract", parameters={}, actor="bob")
    assert plain == deployed.get_execution(plain.execution_id)


def test_a_resent_submit_answers_with_the_execution_its_key_made(deployed: Catalog) -> None:
    version = deployed.get_project_version("default", "etl")
    first, created = deployed.submit_execution(_request(deployed, version.id), actor="a", idempotency_key="k")
    again, created_again = deployed.submit_execution(
        _request(deployed, version.id), actor="a", idempotency_key="k"
    )
    assert created and not created_again and again == first
    assert len(deployed.list_executions()) == 1


def test_a_submit_checked_against_a_replaced_version_is_refused_and_creates_nothing(
    deployed: Catalog,
) -> None:
    old = deployed.get_project_version("default", "etl")
    deployed.submit_execution(_request(deployed, old.id), actor="a", idempotency_key="k", if_newest=True)
    new = deployed.deploy_project("default", MANIFEST, b"version two", actor="admin")
    with pytest.raises(VersionChanged):
        deployed.submit_execution(_request(deployed, old.id), actor="a", if_newest=True)
    # A resent submit too: the master's checked path answers it (it looks its key up first).
    with pytest.raises(VersionChanged):
        deployed.submit_execution(_request(deployed, old.id), actor="a", idempotency_key="k", if_newest=True)
    assert len(deployed.list_executions()) == 1
    record, created = deployed.submit_execution(_request(deployed, new.id), actor="a", if_newest=True)
    assert created and record.project_version_id == new.id
    # Without if_newest a pinned older version still runs (a rerun of what was checked before).
    pinned, _ = deployed.submit_execution(_request(deployed, old.id), actor="a")
    assert pinned.project_version_id == old.id


def test_a_submit_for_a_package_the_version_lacks_names_those_it_has(deployed: Catalog) -> None:
    version = deployed.get_project_version("default", "etl")
    with pytest.raises(NotFound) as caught:
        deployed.submit_execution(_request(deployed, version.id, "transform"), actor="a", if_newest=True)
    assert (
        caught.value.message == "project default/etl has no package 'transform'; its packages: extract, load"
    )


@pytest.mark.postgres
def test_task_notifications_name_their_catalog_and_count_the_new_tasks(
    migrated_pg: str, clock: FakeClock
) -> None:
    """The master that made them skips its own; another wakes as many long-polls as there are tasks."""
    with listening(migrated_pg, clock) as (catalog, listener):
        catalog.deploy_project("default", MANIFEST, b"z", actor="admin")
        catalog.create_execution("default", "etl", "load", parameters={}, actor="admin")
        catalog.create_executions([ExecutionRequest("default", "etl", "load")] * 3, actor="admin")
        heard = list(listener.notifies(timeout=10, stop_after=2))
    assert [n.payload for n in heard] == [f"{catalog.origin} 1", f"{catalog.origin} 3"]
