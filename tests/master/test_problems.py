"""Every error leaves as an RFC 9457 problem document: 400 naming the field, 404, 405, 413, 500."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest

from master.support import MasterHome, context_for, heartbeat_body, new_agent_id, raw
from packfleet.errors import BadRequest, NotFound, RemoteNotFound
from packfleet.manager import ManagerClient
from packfleet.master import DEFAULT_MAX_BODY, MasterServer
from packfleet.protocol import routes

PROBLEM = "application/problem+json"


@pytest.fixture
def admin(mh: MasterHome, tmp_path: Path) -> ssl.SSLContext:
    return context_for(mh.admin, mh, tmp_path)


async def test_a_missing_field_is_a_400_naming_it(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    body = heartbeat_body(new_agent_id())
    del body["machine_name"]
    answer = await raw(
        context_for(mh.worker, mh, tmp_path), server, "POST", routes.WORKER_HEARTBEAT, body=body
    )
    assert answer.status == 400 and answer.content_type == PROBLEM
    assert "missing field 'machine_name'" in answer.body["detail"]


async def test_a_mistyped_field_is_a_400_naming_it(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    body = dict(heartbeat_body(new_agent_id()), cpu_percent="lots")
    answer = await raw(
        context_for(mh.worker, mh, tmp_path), server, "POST", routes.WORKER_HEARTBEAT, body=body
    )
    assert answer.status == 400 and "Heartbeat.cpu_percent" in answer.body["detail"]


async def test_a_body_that_is_not_json_is_a_400(
    mh: MasterHome, server: MasterServer, admin: ssl.SSLContext
) -> None:
    answer = await raw(admin, server, "POST", routes.ADMIN_EXECUTIONS, data=b"{not json")
    assert answer.status == 400 and "is not JSON" in answer.body["detail"]


async def test_unknown_routes_and_records_are_404_problems(
    mh: MasterHome, server: MasterServer, admin: ssl.SSLContext
) -> None:
    route = await raw(admin, server, "GET", "/api/v1/admin/nothing-here")
    assert route.status == 404 and route.content_type == PROBLEM
    assert route.body["fix"].endswith("openapi.json")
    record = await raw(admin, server, "GET", routes.ADMIN_EXECUTION.format(execution_id=999))
    assert record.status == 404 and record.content_type == PROBLEM


async def test_a_wrong_method_is_a_405_problem(
    mh: MasterHome, server: MasterServer, admin: ssl.SSLContext
) -> None:
    answer = await raw(admin, server, "PUT", routes.ADMIN_AUDIT)
    assert answer.status == 405 and answer.content_type == PROBLEM


async def test_an_oversized_body_is_a_413_problem(
    mh: MasterHome, server: MasterServer, admin: ssl.SSLContext
) -> None:
    answer = await raw(admin, server, "POST", routes.ADMIN_EXECUTIONS, data=b" " * (DEFAULT_MAX_BODY + 1))
    assert answer.status == 413 and answer.content_type == PROBLEM
    assert str(DEFAULT_MAX_BODY) in answer.body["detail"]


async def test_bad_parameters_and_archives_are_400s(
    mh: MasterHome, server: MasterServer, manager: ManagerClient
) -> None:
    with pytest.raises(BadRequest) as caught:
        await manager.deploy("default", b"PK not really a zip")
    assert caught.value.status == 400
    with pytest.raises(NotFound) as missing:
        await manager.run("default", "missing", "load")
    assert isinstance(missing.value, RemoteNotFound) and missing.value.status == 404
    assert "no project 'missing'" in str(missing.value)


async def test_an_unexpected_exception_is_a_500_without_the_traceback(
    mh: MasterHome,
    server: MasterServer,
    admin: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(server.state.catalog, "list_workers", explode)
    with caplog.at_level(logging.ERROR, "packfleet.master"):
        answer = await raw(admin, server, "GET", routes.ADMIN_WORKERS)
    assert answer.status == 500 and answer.content_type == PROBLEM
    assert "secret internals" not in str(answer.body)
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
