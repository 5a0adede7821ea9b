"""The live tail of an execution's event messages, as Server-Sent Events (HTML Living Standard 9.2).

Each message carries ``id: <event id>``; a browser that reconnects sends the last one it saw as
``Last-Event-ID`` and the tail resumes right after it, so no line is lost or repeated. A page opened
fresh passes the last id it rendered as ``?after=``. When the execution has ended and every line has
been sent, an ``end`` event says so and the stream closes (no reconnect storm on finished runs).
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from packfleet.catalog import EventRecord
from packfleet.console._pages import _execution_id
from packfleet.console._web import fleet_of, secure

log = logging.getLogger("packfleet.console")

#: A comment line this often keeps proxies and the browser from timing the stream out.
PING_SECONDS = 15.0
BATCH = 500
RELOOK_SECONDS = 5.0


def _message(event: EventRecord) -> str:
    data = {
        "id": event.id,
        "time": event.message_time.strftime("%H:%M:%S"),
        "attempt": event.attempt,
        "type": event.message_type.name.lower(),
        "source": event.message_source,
        "message": event.message,
    }
    # json.dumps escapes newlines, so one event is one data: line whatever the message holds.
    return f"id: {event.id}\nevent: line\ndata: {json.dumps(data)}\n\n"


def _resume_point(request: web.Request) -> int:
    points = [0]
    for raw in (request.headers.get("Last-Event-ID", ""), request.query.get("after", "")):
        raw = raw.strip()
        if raw.isdigit() and len(raw) <= 18:
            points.append(int(raw))
    return max(points)


async def tail(request: web.Request) -> web.StreamResponse:
    fleet = fleet_of(request)
    execution_id = _execution_id(request)
    last = _resume_point(request)
    record = await fleet.db(fleet.catalog.get_execution, execution_id)  # 404 before the stream starts
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    secure(response)
    response.headers["Cache-Control"] = "no-store"
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    try:
        await response.write(b"retry: 2000\n\n")
        written = loop.time()
        ended_once = False
        while not fleet.closing:
            ticket = fleet.event_ticket()  # taken before looking: a notification in between is kept
            record = await fleet.db(fleet.catalog.get_execution, execution_id)
            events = await fleet.db(fleet.catalog.get_events, execution_id, after_id=last, limit=BATCH)
            if events:
                await response.write("".join(_message(event) for event in events).encode())
                last = events[-1].id
                written = loop.time()
                continue
            if record.status.finished and ended_once:
                await response.write(f"event: end\ndata: {json.dumps(record.status.label)}\n\n".encode())
                break
            if record.status.finished:
                # A worker may deliver its last lines just after its completion report: one more look.
                ended_once = True
                await ticket.wait(1.0)
                continue
            # Another master may write events of this run: look again every few seconds regardless.
            await ticket.wait(RELOOK_SECONDS)
            if loop.time() - written >= PING_SECONDS:
                await response.write(b": ping\n\n")
                written = loop.time()
    except (ConnectionResetError, ConnectionError):
        # The tab went away (navigation, visibilitychange, pagehide): nothing to finish.
        pass
    return response
