"""A small master for the worker tests: real TLS (aiohttp), the real protocol messages, scripted faults.

It is not :mod:`packfleet.master` (the worker must be testable alone, and never imports it); it
speaks :mod:`packfleet.protocol` exactly as the routes table says, keeps what the worker sent, and can
be told to answer 503, cut connections, refuse with 403, cancel or take back tasks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web

from packfleet.protocol import (
    CompletionBatch,
    CompletionReply,
    CompletionReport,
    CompletionResult,
    EventAck,
    EventBatch,
    EventMessage,
    Heartbeat,
    HeartbeatReply,
    LeaseRef,
    LeaseReply,
    LeaseRequest,
    ReportBatch,
    TaskAssignment,
    TaskHeartbeat,
    TaskHeartbeatReply,
    decode,
    encode,
    routes,
)

# Longest a lease request is held when no task is queued: the worker's long-poll in miniature.
LONG_POLL_CAP = 0.2


def problem(status: int, detail: str, **extra: str) -> web.Response:
    body = {"type": "about:blank", "title": detail, "status": status, "detail": detail, **extra}
    return web.Response(
        status=status, text=json.dumps(body), content_type=routes.PROBLEM_CONTENT_TYPE.split(";")[0]
    )


@dataclass
class StubMaster:
    """State and scripted behaviour; every list is in arrival order."""

    state: str = "enabled"
    message: str = ""
    next_master_cert_pem: str = ""
    queue: list[TaskAssignment] = field(default_factory=list)
    archives: dict[str, bytes] = field(default_factory=dict)
    tampered: set[str] = field(default_factory=set)
    #: Task ids, or (task id, attempt) leases, to answer "cancel" / "lost" for in task heartbeats.
    cancel: set[int | tuple[int, int]] = field(default_factory=set)
    lost: set[int | tuple[int, int]] = field(default_factory=set)
    #: Consumed one per request: "ok", "503" (problem document), "cut" (store, then drop the connection).
    event_script: list[str] = field(default_factory=list)
    completion_script: list[str] = field(default_factory=list)
    task_beat_script: list[str] = field(default_factory=list)
    lease_script: list[str] = field(default_factory=list)
    forbid_lease: bool = False
    #: Seconds a lease answer that carries tasks is held back (an answer stuck in a partition).
    lease_delay: float = 0.0
    overgive: int = 0
    #: False: answer /worker/report 404, as a master older than that route does.
    knows_report: bool = True
    #: False: answer a report that asks for tasks 400, as a master older than the ask does.
    knows_report_lease: bool = True

    heartbeats: list[Heartbeat] = field(default_factory=list)
    leases: list[LeaseRequest] = field(default_factory=list)
    task_beats: list[TaskHeartbeat] = field(default_factory=list)
    events: dict[tuple[int, int], dict[int, EventMessage]] = field(default_factory=dict)
    event_posts: int = 0
    completion_posts: int = 0
    #: Requests to /worker/report, including those answered 404 or 503.
    report_posts: int = 0
    duplicates: int = 0
    completions: list[CompletionReport] = field(default_factory=list)
    #: ``lease_capacity`` of each report that asked for tasks (refused ones too), and how many it got.
    report_asks: list[int] = field(default_factory=list)
    report_leased: int = 0
    downloads: Counter[str] = field(default_factory=Counter)
    peers: set[str] = field(default_factory=set)
    #: Every connection a heartbeat came over (by id): how many TLS handshakes the worker made.
    connections: set[int] = field(default_factory=set)
    #: Close each heartbeat's connection after the answer, so the next one needs a handshake.
    close_after_heartbeat: bool = False
    endpoint: str = ""
    _added: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, *tasks: TaskAssignment) -> None:
        self.queue.extend(tasks)
        self._added.set()

    def lines(self, task_id: int, attempt: int = 1) -> list[EventMessage]:
        """The stored events of one attempt, by seq."""
        stored = self.events.get((task_id, attempt), {})
        return [stored[seq] for seq in sorted(stored)]

    def completion(self, task_id: int) -> CompletionReport:
        (found,) = [c for c in self.completions if c.task_id == task_id]
        return found

    # -- handlers ---------------------------------------------------------------------------------

    def _peer(self, request: web.Request) -> None:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if der:
            self.peers.add(hashlib.sha1(der, usedforsecurity=False).hexdigest().upper())

    async def heartbeat(self, request: web.Request) -> web.Response:
        self._peer(request)
        self.connections.add(id(request.transport))
        beat = decode(Heartbeat, await request.json())
        self.heartbeats.append(beat)
        reply = HeartbeatReply(
            state=self.state,  # type: ignore[arg-type]
            message=self.message,
            master_time=datetime.now(UTC).isoformat(),
            agent_id=beat.agent_id,
            next_master_cert_pem=self.next_master_cert_pem,
        )
        response = web.json_response(encode(reply))
        if self.close_after_heartbeat:
            response.force_close()
        return response

    async def lease(self, request: web.Request) -> web.Response:
        ask = decode(LeaseRequest, await request.json())
        self.leases.append(ask)
        if self.lease_script and self.lease_script.pop(0) == "503":
            return problem(503, "the master is restarting")
        if self.forbid_lease or self.state != "enabled":
            return problem(
                403, f"worker {ask.agent_id} is {self.state}", fix="packfleet manager worker enable"
            )
        if not self.queue and ask.wait_seconds > 0:
            self._added.clear()
            try:
                await asyncio.wait_for(self._added.wait(), min(ask.wait_seconds, LONG_POLL_CAP))
            except TimeoutError:
                pass
        given = self._give(ask.capacity + self.overgive, ask.lease_seconds)
        if given and self.lease_delay:
            await asyncio.sleep(self.lease_delay)
        return web.json_response(encode(LeaseReply(tasks=given)))

    def _give(self, count: int, lease_seconds: float) -> list[TaskAssignment]:
        given, self.queue = self.queue[:count], self.queue[count:]
        # Leased now, for what the worker asked, as a master says it on its own clock.
        expires = (datetime.now(UTC) + timedelta(seconds=lease_seconds)).isoformat()
        return [dataclasses.replace(task, lease_expires_at=expires) for task in given]

    async def task_heartbeat(self, request: web.Request) -> web.Response:
        beat = decode(TaskHeartbeat, await request.json())
        if self.task_beat_script and self.task_beat_script.pop(0) == "503":
            return problem(503, "the master is restarting")
        self.task_beats.append(beat)

        def named(lease: LeaseRef, which: set[int | tuple[int, int]]) -> bool:
            return lease.task_id in which or (lease.task_id, lease.attempt) in which

        reply = TaskHeartbeatReply(
            extended=[x for x in beat.leases if not named(x, self.cancel) and not named(x, self.lost)],
            cancel=[x for x in beat.leases if named(x, self.cancel) and not named(x, self.lost)],
            lost=[x for x in beat.leases if named(x, self.lost)],
        )
        return web.json_response(encode(reply))

    async def post_events(self, request: web.Request) -> web.Response:
        action = self.event_script.pop(0) if self.event_script else "ok"
        if action == "503":
            return problem(503, "the master is restarting")
        batch = decode(EventBatch, await request.json())
        self.event_posts += 1
        stored = self._store_events(batch.events)
        if action == "cut":
            assert request.transport is not None
            request.transport.abort()  # stored, but the worker never hears so: it must resend
        return web.json_response(encode(EventAck(acknowledged=len(batch.events), stored=stored)))

    async def complete(self, request: web.Request) -> web.Response:
        if self.completion_script and self.completion_script.pop(0) == "503":
            return problem(503, "the master is restarting")
        batch = decode(CompletionBatch, await request.json())
        self.completion_posts += 1
        return web.json_response(encode(CompletionReply(results=self._complete(batch.reports))))

    async def report(self, request: web.Request) -> web.Response:
        """Both of the above in one request; each script is consumed when its part is present."""
        self.report_posts += 1
        if not self.knows_report:
            return problem(404, f"no route {request.path}")
        raw = await request.json()
        asked = "lease_capacity" in raw
        if asked:
            self.report_asks.append(raw["lease_capacity"])
            if not self.knows_report_lease:
                return problem(400, "ReportBatch: unknown field(s) lease_capacity, lease_seconds")
        batch = decode(ReportBatch, raw)
        actions = []
        if batch.events:
            actions.append(self.event_script.pop(0) if self.event_script else "ok")
        if batch.reports:
            actions.append(self.completion_script.pop(0) if self.completion_script else "ok")
        if "503" in actions:
            return problem(503, "the master is restarting")  # one transaction: nothing stored
        stored = self._store_events(batch.events)
        results = self._complete(batch.reports)
        if "cut" in actions:
            assert request.transport is not None
            request.transport.abort()
        body = {"acknowledged": len(batch.events), "stored": stored, "results": encode(results)}
        if asked:  # as the master: the tasks only for a report that asked
            given = self._give(batch.lease_capacity, batch.lease_seconds)
            self.report_leased += len(given)
            body["tasks"] = encode(given)
        return web.json_response(body)

    def _store_events(self, events: list[EventMessage]) -> int:
        stored = 0
        for event in events:
            attempt = self.events.setdefault((event.task_id, event.attempt), {})
            if event.seq in attempt:
                self.duplicates += 1
            else:
                attempt[event.seq] = event
                stored += 1
        return stored

    def _complete(self, reports: list[CompletionReport]) -> list[CompletionResult]:
        results = []
        for report in reports:
            if all(c.task_id != report.task_id for c in self.completions):
                self.completions.append(report)
            results.append(CompletionResult(task_id=report.task_id, accepted=True, stale=False))
        return results

    async def project(self, request: web.Request) -> web.Response:
        sha = request.match_info["sha256"]
        self.downloads[sha] += 1
        data = self.archives.get(sha)
        if data is None:
            return problem(404, f"no project archive {sha}")
        if sha in self.tampered:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return web.Response(body=data, content_type="application/zip")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(routes.WORKER_HEARTBEAT, self.heartbeat)
        app.router.add_post(routes.WORKER_LEASE, self.lease)
        app.router.add_post(routes.WORKER_TASK_HEARTBEAT, self.task_heartbeat)
        app.router.add_post(routes.WORKER_EVENTS, self.post_events)
        app.router.add_post(routes.WORKER_COMPLETE, self.complete)
        app.router.add_post(routes.WORKER_REPORT, self.report)
        app.router.add_get(routes.WORKER_PROJECT, self.project)
        return app


@asynccontextmanager
async def serve(stub: StubMaster, context: ssl.SSLContext) -> AsyncIterator[StubMaster]:
    """Serve ``stub`` over TLS on 127.0.0.1 and a free port; ``stub.endpoint`` is its URL."""
    runner = web.AppRunner(stub.app(), handle_signals=False, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    host, port = runner.addresses[0][:2]
    stub.endpoint = f"https://{host}:{port}"
    try:
        yield stub
    finally:
        await runner.cleanup()
