"""The OpenAPI document and aiohttp's router describe the same routes, both ways."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from master.support import MasterHome, context_for, raw
from packfleet.master import ENDPOINTS, MasterServer, openapi_document
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
