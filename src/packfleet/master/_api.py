"""The route table: one list of endpoints drives the router, the access checks and the OpenAPI document.

Declaring each route once (method, path, who may call it, what it takes and returns) is what lets a
test walk aiohttp's router and the OpenAPI document and find the same routes both ways: neither can
grow a route the other does not describe.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from aiohttp import web

from packfleet import __version__
from packfleet.master._auth import Access
from packfleet.master._state import Call

MiB = 1024 * 1024
#: Body limit of every route but the deploy: JSON batches of events are the largest normal bodies.
DEFAULT_MAX_BODY = 4 * MiB
#: Body limit of a project deploy (a zip archive).
DEPLOY_MAX_BODY = 64 * MiB

Handler = Callable[[Call], Awaitable[web.StreamResponse]]
#: A body or answer: a wire dataclass, ``"zip"`` (raw archive bytes), ``"object"``/``"array"`` (the
#: JSON of catalog records), or None (no body).
Shape = type | Literal["zip", "object", "array"] | None


@dataclass(frozen=True)
class Param:
    """A query parameter, for the OpenAPI document."""

    name: str
    type: Literal["string", "integer", "number"]
    description: str
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    """One route: what aiohttp dispatches, what the access check admits, what OpenAPI says."""

    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    body: Shape = None
    answer: Shape = "object"
    status: int = 200
    params: tuple[Param, ...] = ()
    max_body: int = DEFAULT_MAX_BODY

    @property
    def admits(self) -> Access:
        """Whom the access check admits: a read (GET) of an admin or executor route also admits
        role viewer, who reads everything and changes nothing. One rule here, so no read route
        can forget it."""
        if self.method == "GET" and self.access in ("admin", "executor"):
            return "viewer"
        return self.access


# --- JSON Schema from the wire dataclasses ------------------------------------------------------


def _schema_of(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema (2020-12, as OpenAPI 3.1 uses) for the types :mod:`packfleet.protocol` allows."""
    if hint is Any:
        return {}
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        schemas = [_schema_of(a, defs) for a in options]
        if type(None) in get_args(hint):
            schemas.append({"type": "null"})
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if origin is list:
        return {"type": "array", "items": _schema_of(get_args(hint)[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(get_args(hint)[1], defs)}
    if origin is typing.Literal:
        return {"enum": list(get_args(hint))}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return {"$ref": f"#/components/schemas/{_define(hint, defs)}"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if hint in simple:
        return {"type": simple[hint]}
    raise TypeError(f"no JSON Schema for {hint!r}")


def _define(cls: type, defs: dict[str, Any]) -> str:
    name = cls.__name__
    if name in defs:
        return name
    defs[name] = {}  # reserve first: a message may refer to itself
    hints = get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):
        properties[field.name] = _schema_of(hints[field.name], defs)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__:
        schema["description"] = " ".join(cls.__doc__.split())
    if required:
        schema["required"] = required
    defs[name] = schema
    return name


def _content(shape: Shape, defs: dict[str, Any]) -> dict[str, Any]:
    if shape == "zip":
        return {"application/zip": {"schema": {"type": "string", "contentMediaType": "application/zip"}}}
    if shape == "object":
        return {"application/json": {"schema": {"type": "object"}}}
    if shape == "array":
        return {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}
    assert isinstance(shape, type)  # noqa: S101 - Shape is a closed set; None is handled by callers
    return {"application/json": {"schema": _schema_of(shape, defs)}}


_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details, with packfleet's thumbprint, worker and fix members.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "thumbprint": {"type": "string"},
        "worker": {"type": "string"},
        "fix": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "open": [],
    "certificate": [{"clientCertificate": []}],
    "worker": [{"clientCertificate": []}],
    "viewer": [{"clientCertificate": []}],
    "executor": [{"clientCertificate": []}],
    "admin": [{"clientCertificate": []}],
}

_WHO = {
    "open": "Open: no client certificate needed.",
    "certificate": "Any client certificate in the master's Root store (unknown workers register here).",
    "worker": "An enabled worker's active certificate.",
    "viewer": "Role admin, executor or viewer (any read).",
    "executor": "Role admin or executor.",
    "admin": "Role admin.",
}


def _path_params(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]


def openapi_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 description of ``endpoints``, as ``GET /api/v1/openapi.json`` serves it."""
    defs: dict[str, Any] = {"Problem": _PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        operation: dict[str, Any] = {
            "summary": ep.summary,
            "description": _WHO[ep.admits],
            "operationId": f"{ep.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', ep.path.lower()).strip('_')}",
            "security": _SECURITY[ep.admits],
            "responses": {},
        }
        parameters = _path_params(ep.path) + [
            {
                "name": p.name,
                "in": "query",
                "required": p.required,
                "description": p.description,
                "schema": {"type": p.type},
            }
            for p in ep.params
        ]
        if parameters:
            operation["parameters"] = parameters
        if ep.body is not None:
            operation["requestBody"] = {"required": True, "content": _content(ep.body, defs)}
        answer: dict[str, Any] = {"description": "OK"}
        if ep.answer is not None:
            answer["content"] = _content(ep.answer, defs)
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        operation["responses"][str(ep.status)] = answer
        operation["responses"]["default"] = {"description": "A problem document", "content": problem}
        paths.setdefault(ep.path, {})[ep.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "packfleet master",
            "version": __version__,
            "description": "SSIS Scale Out for Linux: the master's HTTPS API. Callers authenticate "
            "with a TLS client certificate; the master maps its SHA-1 thumbprint to a principal.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "clientCertificate": {
                    "type": "mutualTLS",
                    "description": "A certificate from the master's Root store (pinned by thumbprint).",
                }
            },
        },
    }
