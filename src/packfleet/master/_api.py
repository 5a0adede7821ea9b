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
#: JSON of catalog records), or None (no body). An answer may also be a union of wire dataclasses
#: (``A | B``: one of them, as the request asked).
Shape = type | types.UnionType | Literal["zip", "object", "array"] | None


@dataclass(frozen=True)
class Param:
    """A query parameter, for the OpenAPI document."""

    name: str
    type: Literal["string", "integer", "number"]
    description: str
    required: bool = False
    #: The range the handler accepts, so that a fuzzer's valid values are the ones the master takes.
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    max_length: int | None = None


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
    #: False: the access check sees only whether a certificate came (``caller.principal`` is None)
    #: and the handler identifies the caller itself when it needs to. The heartbeat's usual case is
    #: answered by the very catalog call that records it: a lookup first would double its trips to
    #: the catalog, thousands a minute in a large fleet.
    identify: bool = True

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
    if hint is int:  # packfleet.protocol refuses integers beyond 64 bits
        return {"type": "integer", "format": "int64"}
    simple = {str: "string", float: "number", bool: "boolean"}
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
        # field(metadata={"schema": {...}}): the pattern or range the handler checks, stated here too.
        properties[field.name] = _schema_of(hints[field.name], defs) | dict(field.metadata.get("schema", {}))
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    # A rule across fields (``SCHEMA: ClassVar[...]``, e.g. "exactly one of a and b") the handler checks.
    schema |= getattr(cls, "SCHEMA", {})
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
    assert isinstance(shape, type | types.UnionType)  # noqa: S101 - a closed set; None is handled by callers
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


#: What each path parameter's handler accepts (any string when absent). The master also takes
#: thumbprints with spaces, colons or lowercase; the document names the one canonical spelling.
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "execution_id": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    "thumbprint": {"type": "string", "pattern": "^[0-9A-F]{40}$"},
    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
}
#: The parameters whose pattern the router itself applies (a thumbprint is matched loosely there:
#: the handler takes the spellings people paste).
_ROUTED = ("execution_id", "sha256")


def _routed_pattern(name: str) -> str:
    """The regular expression (without anchors) a path parameter matches in the router."""
    return _PATH_SCHEMAS[name]["pattern"][1:-1] if name in _ROUTED else "[^/]+"


def _path_params(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(name, {"type": "string"})}
        for name in re.findall(r"{(\w+)}", path)
    ]


def _param_schema(p: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": p.type}
    if p.minimum is not None:
        schema["minimum"] = p.minimum
    if p.maximum is not None:
        schema["maximum"] = p.maximum
    if p.pattern is not None:
        schema["pattern"] = p.pattern
    if p.max_length is not None:
        schema["maxLength"] = p.max_length
    return schema


def _path_regex(path: str) -> re.Pattern[str]:
    parts = re.split(r"{(\w+)}", path)
    patterns = [_routed_pattern(name) for name in parts[1::2]]
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?:{patterns[i // 2]})" for i, part in enumerate(parts)
    )
    return re.compile(f"^{regex}$")


def router_path(path: str) -> str:
    """``path`` for aiohttp's router, each constrained parameter with its pattern.

    ``/executions/{execution_id}`` becomes ``/executions/{execution_id:[0-9]{1,18}}``, so that
    ``GET /executions/bulk`` is a 405 (only POST is there), not a request for execution "bulk".
    """

    def constrained(match: re.Match[str]) -> str:
        return f"{{{match[1]}:{_routed_pattern(match[1])}}}" if match[1] in _ROUTED else match[0]

    return re.sub(r"{(\w+)}", constrained, path)


def allowed_methods(endpoints: Sequence[Endpoint], path: str) -> list[str]:
    """The methods the document lists for ``path`` (a 405's ``Allow`` header, RFC 9110 §10.2.1).

    aiohttp's own list also counts routes whose path parameter would refuse the value (``GET
    /executions/bulk`` matches ``/executions/{execution_id}``), so it names methods the path lacks.
    """
    return sorted({ep.method for ep in endpoints if _path_regex(ep.path).match(path)})


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
                "schema": _param_schema(p),
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
