"""Downloads: an execution's event messages as text or JSON lines, the audit log as CSV or JSON lines.

Streamed a batch at a time from the catalog (paged by id, never by offset), so a log of millions of
lines costs the master one batch of memory and the first bytes leave at once. The audit download
takes the audit page's filters (who, what, target) and holds every matching row, oldest first.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from packfleet.catalog import AuditRecord, EventRecord
from packfleet.console._pages import _execution_id, audit_filters
from packfleet.console._web import ConsoleRefusal, fleet_of, secure

#: Rows read from the catalog per write.
BATCH = 1000
_TYPES = {"txt": "text/plain", "jsonl": "application/x-ndjson", "csv": "text/csv"}
#: A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): such a
#: value is written with a leading apostrophe, which spreadsheets show as text.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


async def _start(request: web.Request, filename: str, kind: str) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{_TYPES[kind]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
    )
    secure(response)
    await response.prepare(request)
    return response


def _kind(request: web.Request, allowed: tuple[str, ...]) -> str:
    kind = request.match_info["kind"]
    if kind not in allowed:
        raise ConsoleRefusal(404, f"no download as .{kind}; there are {', '.join('.' + k for k in allowed)}")
    return kind


def event_text(event: EventRecord) -> str:
    """One event message as a line of text; a message of several lines keeps them, indented."""
    stamp = event.message_time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    message = event.message.replace("\n", "\n    ")
    kind = event.message_type.name.lower()
    return f"{stamp} attempt {event.attempt} {kind} {event.message_source}: {message}\n"


def event_json(event: EventRecord) -> str:
    data = {
        "id": event.id,
        "execution_id": event.execution_id,
        "task_id": event.task_id,
        "attempt": event.attempt,
        "seq": event.seq,
        "time": event.message_time.isoformat(),
        "type": event.message_type.name.lower(),
        "source": event.message_source,
        "message": event.message,
    }
    return json.dumps(data, ensure_ascii=False) + "\n"


async def execution_log(request: web.Request) -> web.StreamResponse:
    """``/executions/{id}/log.txt`` or ``.jsonl``: every event message, in arrival order."""
    kind = _kind(request, ("txt", "jsonl"))
    fleet = fleet_of(request)
    execution_id = _execution_id(request)
    await fleet.db(fleet.catalog.get_execution, execution_id)  # 404 before the download starts
    response = await _start(request, f"execution-{execution_id}.{kind}", kind)
    render = event_text if kind == "txt" else event_json
    last = 0
    while True:
        events = await fleet.db(fleet.catalog.get_events, execution_id, after_id=last, limit=BATCH)
        if not events:
            break
        await response.write("".join(render(event) for event in events).encode())
        last = events[-1].id
    await response.write_eof()
    return response


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "'" + text if text.startswith(_FORMULA) else text


def _csv(rows: Iterable[AuditRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for a in rows:
        writer.writerow(
            [a.id, a.time.isoformat(), _cell(a.actor), _cell(a.action), _cell(a.target), _cell(a.details)]
        )
    return out.getvalue()


def _jsonl(rows: Iterable[AuditRecord]) -> str:
    return "".join(
        json.dumps(
            {
                "id": a.id,
                "time": a.time.isoformat(),
                "actor": a.actor,
                "action": a.action,
                "target": a.target,
                "details": a.details,
            },
            ensure_ascii=False,
        )
        + "\n"
        for a in rows
    )


async def audit_log(request: web.Request) -> web.StreamResponse:
    """``/audit/download.csv`` or ``.jsonl`` with the audit page's filters: every matching row."""
    kind = _kind(request, ("csv", "jsonl"))
    fleet = fleet_of(request)
    filters = audit_filters(request)
    response = await _start(request, f"audit.{kind}", kind)
    if kind == "csv":
        await response.write(b"id,time,who,what,target,details\r\n")
    last = 0
    while True:
        rows = await fleet.db(
            fleet.catalog.list_audit,
            limit=BATCH,
            after_id=last,
            actor=filters["actor"] or None,
            action=filters["action"] or None,
            target=filters["target"] or None,
        )
        if not rows:
            break
        await response.write((_csv(rows) if kind == "csv" else _jsonl(rows)).encode())
        last = rows[-1].id
    await response.write_eof()
    return response
