"""The OpenAPI document and aiohttp's router describe the same routes, both ways."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web

from master.support import MasterHome, context_for, heartbeat_body, new_agent_id, raw
from packfleet.master import ENDPOINTS, MasterServer, openapi_document
from packfleet.pki import create_self_signed
from packfleet.protocol import routes


def router_routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        found.add((route.method.lower(), str(path)))
    return found


def document_routes(doc: dict[str, object]) -> set[tuple[str, str]]:
    paths = doc["paths"]
    assert isinstance(paths, dict)
    return {(method, path) for path, operations in paths.items() for method in operations}


async def test_the_served_document_matches_the_router_both_ways(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    answer = await raw(context_for(None, mh, tmp_path), server, "GET", routes.OPENAPI)
    assert answer.status == 200
    doc = answer.body
    assert doc["openapi"] == "3.1.0"
    app = server.app
    in_router = router_routes(app)
    in_document = document_routes(doc)
    assert in_router - in_document == set()
    assert in_document - in_router == set()
    assert (("post", routes.WORKER_LEASE)) in in_document


def test_every_wire_schema_reference_resolves() -> None:
    doc = openapi_document(ENDPOINTS)
    schemas = doc["components"]["schemas"]
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    lease = schemas["LeaseRequest"]
    assert lease["required"] == ["agent_id", "capacity", "wait_seconds", "lease_seconds"]
    assert lease["properties"]["wait_seconds"] == {"type": "number"}
    assert schemas["CompletionReport"]["properties"]["outcome"] == {
        "enum": ["succeeded", "failed", "canceled"]
    }


def test_open_routes_need_no_certificate_and_the_rest_do() -> None:
    doc = openapi_document(ENDPOINTS)
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            open_route = path in (routes.HEALTH, routes.OPENAPI, routes.JOIN)
            assert (operation["security"] == []) is open_route, path


# --- what the document promises about a body is what the master takes ---------------------------


def _body_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = openapi_document(ENDPOINTS)["components"]["schemas"][name]
    return schema


async def test_identity_names_and_roles_the_document_refuses_are_the_ones_the_master_refuses(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    props = _body_schema("CreateIdentity")["properties"]
    assert props["role"]["enum"] == ["admin", "executor", "viewer"]
    assert props["cert_pem"]["format"] == "pem-certificate"
    pattern, longest = props["name"]["pattern"], props["name"]["maxLength"]
    admin = context_for(mh.admin, mh, tmp_path)
    taken = ["alice", " bob ", "Zoë Ops", "x" * longest]
    names = [*taken, "", "   ", "a/b", "tab\there", "nul\x00", "y" * (longest + 1)]
    for n, name in enumerate(names):
        documented = len(name) <= longest and re.search(pattern, name) is not None
        assert documented == (name in taken), name
        cert = create_self_signed([f"ops-{n}"]).cert_pem().decode()
        body = {"name": name, "role": "viewer", "cert_pem": cert}
        answer = await raw(admin, server, "POST", routes.ADMIN_IDENTITIES, body=body)
        if documented:
            assert answer.status == 201, (name, answer.body)
            assert answer.body["name"] == name.strip()
        else:
            assert answer.status == 400, (name, answer.body)
            assert "is not a usable identity name" in answer.body["detail"]
            assert answer.body["fix"].startswith("packfleet manager identity create")
    cert = create_self_signed(["ops-root"]).cert_pem().decode()
    body = {"name": "carol", "role": "root", "cert_pem": cert}
    answer = await raw(admin, server, "POST", routes.ADMIN_IDENTITIES, body=body)
    assert answer.status == 400 and "role 'root' is not one of" in answer.body["detail"]


async def test_connect_takes_exactly_one_of_certificate_and_thumbprint_as_documented(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    schema = _body_schema("ConnectWorker")
    assert schema["oneOf"] == [{"required": ["cert_pem"]}, {"required": ["thumbprint"]}]
    assert schema["properties"]["thumbprint"]["pattern"] == "^[0-9A-F]{40}$"
    admin = context_for(mh.admin, mh, tmp_path)
    path = routes.ADMIN_WORKER_CONNECT.format(ref="worker1")
    pem = create_self_signed(["fresh-worker"]).cert_pem().decode()
    for body in ({}, {"cert_pem": pem, "thumbprint": "A" * 40}):
        answer = await raw(admin, server, "POST", path, body=body)
        assert answer.status == 400, body
        assert "give either cert_pem" in answer.body["detail"]
    # Documented as valid: the master takes it and answers that it holds no such certificate.
    answer = await raw(admin, server, "POST", path, body={"thumbprint": "A" * 40})
    assert answer.status == 404 and "is neither in the catalog nor" in answer.body["detail"]


async def test_a_heartbeat_time_is_empty_or_a_date_time_as_documented(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    assert _body_schema("Heartbeat")["properties"]["time"]["anyOf"] == [
        {"const": ""},
        {"format": "date-time"},
    ]
    worker = context_for(mh.worker, mh, tmp_path)
    agent = new_agent_id()
    for sent, status in (("", 200), ("2001-02-03T04:05:06Z", 200), ("yesterday", 400), ("2001-02-03", 400)):
        body = heartbeat_body(agent) | {"time": sent}
        answer = await raw(worker, server, "POST", routes.WORKER_HEARTBEAT, body=body)
        assert answer.status == status, (sent, answer.body)
        if status == 400:
            assert f"Heartbeat.time: {sent!r}" in answer.body["detail"]
        else:
            # A clock years behind is measured and told, not refused.
            assert ("behind the master's" in answer.body["clock_warning"]) == bool(sent)
