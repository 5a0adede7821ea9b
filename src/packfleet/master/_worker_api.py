"""The worker routes of :mod:`packfleet.protocol`: heartbeat, lease (long-poll), task heartbeat,
events, completion, both in one report, and project download."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from aiohttp import web
from cryptography import x509

from packfleet import protocol
from packfleet.catalog import (
    Catalog,
    CompletionReport,
    CompletionResult,
    EventInput,
    HeartbeatOutcome,
    LeaseAsk,
    Principal,
    TaskAssignment,
    WorkerInfo,
    canonical_agent_id,
)
from packfleet.errors import PackfleetError
from packfleet.master._admission import admission_refusal
from packfleet.master._api import Endpoint
from packfleet.master._auth import Caller, check_access, require_agent
from packfleet.master._batches import HEARTBEATS
from packfleet.master._logsafe import ChangeLog, safe
from packfleet.master._problems import Problem, bad_request, forbidden
from packfleet.master._services import services_of
from packfleet.master._state import Call, MasterState, json_response, off_catalog
from packfleet.master._times import clock_warning, parse_aware_time
from packfleet.master._wakeup import EVENTS, ROTATION, TASKS, Ticket, handed_over, wait_any, worker_topic
from packfleet.pki import CertStore, Credential, check_usable
from packfleet.protocol import routes

log = logging.getLogger("packfleet.master")

#: Bounds on what a worker may ask for in one request; SSIS's MaxTaskCount defaults to 10.
MAX_CAPACITY = 100
MIN_LEASE_SECONDS = 5.0
MAX_LEASE_SECONDS = 3600.0


def _lease_seconds(asked: float) -> float:
    return max(MIN_LEASE_SECONDS, min(float(asked), MAX_LEASE_SECONDS))


def _pem(der: bytes | None) -> bytes | None:
    # Base64 between the PEM lines, no parse: the catalog reads it only for a certificate it
    # first hears of, and every heartbeat carries it.
    return None if der is None else ssl.DER_cert_to_PEM_cert(der).encode("ascii")


async def heartbeat(call: Call) -> web.StreamResponse:
    """Record a worker's heartbeat; for an unknown certificate this registers a disabled worker."""
    state, caller = call.state, call.caller
    beat = await call.message(protocol.Heartbeat)
    assert caller.thumbprint is not None  # noqa: S101 - the "certificate" access rule guarantees it
    received = state.clock()
    skew = (parse_aware_time(beat.time, "Heartbeat.time") - received).total_seconds() if beat.time else None
    info = WorkerInfo(
        agent_id=beat.agent_id,
        display_name=beat.display_name,
        machine_name=beat.machine_name,
        user_account=beat.user_account,
        ips=tuple(beat.ips),
        cpu_percent=beat.cpu_percent,
        memory_free_mb=beat.memory_free_mb,
        running_tasks=beat.running_tasks,
        max_tasks=beat.max_tasks,
        version=beat.version,
        clock_skew_seconds=skew,
        lease_gate=beat.lease_gate,
    )
    outcome = await _record_heartbeat(call, caller.thumbprint, info)
    _remember_principal(state, caller.thumbprint, outcome)
    if outcome.state == "conflict":
        # A refused bind: the certificate, the AgentId it claimed and the command that lifts it (the
        # refusal is logged, rate-limited, by the problem middleware).
        raise Problem(
            409,
            "identity-conflict",
            outcome.message,
            thumbprint=caller.thumbprint,
            fix=outcome.fix,
        )
    _log_answer(call, caller.thumbprint, beat.agent_id, outcome)
    reply = protocol.HeartbeatReply(
        state=outcome.state,
        message=outcome.message,
        master_time=state.clock().isoformat(),
        agent_id=outcome.worker.agent_id if outcome.worker is not None else beat.agent_id,
        clock_warning=clock_warning(beat.agent_id, skew),
    )
    rotation = services_of(call).rotation
    if rotation is not None and outcome.worker is not None:
        reply = rotation.on_heartbeat(outcome.worker.agent_id, beat.accepted_master_thumbprints, reply)
    return json_response(protocol.encode(reply))


#: A worker that is not enabled heartbeats on, every 10 s by default: the master logs its answer
#: when it changes, then again at most once per this many seconds (with the count left out), not
#: at every heartbeat, which buried the log of a fleet with many workers waiting to be enabled.
REPEAT_ANSWER_SECONDS = 600.0
HEARTBEAT_LOG: web.AppKey[ChangeLog] = web.AppKey("packfleet_heartbeat_log", ChangeLog)


def heartbeat_log() -> ChangeLog:
    """The log of heartbeat answers other than ``enabled``, for ``app[HEARTBEAT_LOG]``."""
    return ChangeLog(log, window=REPEAT_ANSWER_SECONDS)


def _log_answer(call: Call, thumbprint: str, agent_id: str, outcome: HeartbeatOutcome) -> None:
    answers = call.request.app.get(HEARTBEAT_LOG)
    if outcome.state == "enabled":
        if answers is not None:
            answers.forget(thumbprint)  # the next answer other than enabled is news again
        return
    line = "heartbeat of %s (certificate %s): %s"
    args = (safe(agent_id), thumbprint, safe(outcome.message, 600))
    if answers is None:
        log.info(line, *args)
    else:
        answers.log(thumbprint, outcome.state, line, *args)


#: The heartbeat route, as its refusals name it.
_HEARTBEAT_ROUTE = f"POST {routes.WORKER_HEARTBEAT}"


async def _record_heartbeat(call: Call, thumbprint: str, info: WorkerInfo) -> HeartbeatOutcome:
    """Record the heartbeat; identify its certificate first only when it is not the usual one.

    The route does not identify its caller beforehand (``Endpoint.identify``): the usual heartbeat, a
    worker's own certificate bound to the AgentId it names, is recorded at once, and the catalog's
    answer says all a lookup would have. Any other (an unknown certificate about to register, a
    refusal, an identity's certificate) is identified and checked first, as every route's caller is.
    """
    state = call.state
    writer = call.request.app.get(HEARTBEATS)
    if writer is not None:  # with the other heartbeats arriving now, in one transaction
        usual = await writer.write_bound(thumbprint, info)
        if usual is not None:
            return usual
    caller = replace(call.caller, principal=await state.principals.get(thumbprint))
    check_access("certificate", caller, _HEARTBEAT_ROUTE)
    pinned = False
    if caller.principal is None or caller.principal.agent_id is None:
        # Not bound yet: about to register a worker. A certificate the master would refuse to add
        # (CA, SHA-1, wrong EKU...) that reached Root by hand must not register one either.
        pinned = await off_catalog(_check_registrable, state, caller)  # Root store files, not the catalog
    if writer is not None:
        return await writer.write(thumbprint, info, _pem(caller.der), pinned=pinned)
    return await state.db(
        state.catalog.worker_heartbeat,
        thumbprint,
        info,
        pem=_pem(caller.der),
        pinned=lambda _thumbprint: pinned,
    )


def _remember_principal(state: MasterState, thumbprint: str, outcome: HeartbeatOutcome) -> None:
    """What the heartbeat's transaction just read of this certificate is what ``authorize`` would
    say now: keep it for the worker's next requests (its lease long-poll) instead of asking again.
    Anything else (a refusal, a certificate that just got bound...) is forgotten and asked anew."""
    worker = outcome.worker
    if outcome.state in ("enabled", "disabled") and worker is not None:
        principal = Principal(
            "worker",
            worker.display_name or thumbprint,
            worker.agent_id,
            worker.is_enabled,
            thumbprint,
            "active",
        )
        state.principals.put(thumbprint, principal)
    else:
        state.principals.invalidate([thumbprint])


def _check_registrable(state: MasterState, caller: Caller) -> bool:
    """Refuse a certificate that may not register a worker; say whether it is itself in Root.

    An unknown certificate binds only if it is (see ``catalog.worker_heartbeat``): the store is read
    here, beside the other checks, rather than on the catalog's thread inside its transaction.
    """
    if caller.der is None or caller.thumbprint is None:
        return False
    public = Credential(x509.load_der_x509_certificate(caller.der))
    try:
        check_usable(public, purposes=("client",), now=state.clock(), peer=True)
        refusal = admission_refusal(public, CertStore(state.home, "Root"))
    except PackfleetError as exc:
        refusal = exc.message
    if refusal is not None:
        raise forbidden(
            f"certificate {caller.thumbprint} cannot register a worker: {refusal}",
            thumbprint=caller.thumbprint,
            fix=f"on the master: packfleet cert delete --store Root {caller.thumbprint}; on the worker: "
            'packfleet cert create -n "CN=<worker>" --store My, then packfleet manager worker add',
        )
    return state.pinned_in_root(caller.thumbprint)


async def lease(call: Call) -> web.StreamResponse:
    """Lease up to ``capacity`` tasks, holding the request until one is ready or the wait ends.

    The loop takes a wake-up ticket *before* looking in the catalog, so an execution created between
    the look and the wait still wakes it: the answer comes as soon as a task is ready, with no fixed
    polling delay.
    """
    state, caller = call.state, call.caller
    ask = await call.message(protocol.LeaseRequest)
    require_agent(caller, ask.agent_id)
    capacity = max(0, min(ask.capacity, MAX_CAPACITY))
    lease_seconds = _lease_seconds(ask.lease_seconds)
    agent_key = canonical_agent_id(ask.agent_id)
    own_topic = worker_topic(agent_key)
    # What a submit may lease for this long-poll while it waits (see catalog._handoff).
    asks = LeaseAsk(ask.agent_id, capacity, lease_seconds)
    rotation = services_of(call).rotation
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.wait_seconds(ask.wait_seconds)
    tasks: list[dict[str, Any]] = []  # each a protocol.TaskAssignment in its wire form
    hint = False
    waited = False
    # The last wait ended with a new task's wake-up handed to this long-poll alone: the task is
    # this long-poll's to take, or its news to pass on, or it waits for another long-poll's timeout.
    handed = False
    # This worker's previous request looked and left nothing ready that it may take: unless a task
    # became ready since (its ticket notified), this one waits without looking first.
    drained = state.drained_looks.pop(agent_key, None)
    # The ticket of the last look (this request's, or its predecessor's) if it left nothing to take.
    looked: Ticket | None = drained
    try:
        while capacity > 0 and not state.closing:
            ticket = state.wakeups.ticket(TASKS)
            own = state.wakeups.ticket(own_topic)
            step = state.wakeups.ticket(ROTATION)
            # A rotation step waits on this worker: answer now so it heartbeats at once (seconds, not
            # its AgentHeartbeatInterval). At most once per heartbeat of the worker.
            if rotation is not None and rotation.needs_heartbeat(ask.agent_id):
                hint = True
                break
            if drained is not None and not drained.notified:
                # An idle worker's next long-poll comes right after its task's report: its look, a
                # write transaction, found nothing and queued on the catalog's thread beside the
                # report's follower reading the execution's end (make bench, latency). Waiting on the
                # earlier ticket misses nothing: a task made ready since either fired it (a broadcast,
                # or no long-poll waiting) or was handed to a waiting long-poll, which takes it or
                # passes the news on to every ticket (notify_others).
                ticket, drained = drained, None
                if leased := await _wait(ticket, own, step, asks, max(0.0, deadline - loop.time())):
                    # A submit leased for this long-poll: fewer than it asked for means nothing else
                    # was ready, as after a look.
                    looked = ticket if len(leased) < capacity else None
                    tasks = _wire_tasks(state, leased)
                    break
                handed = ticket.handed
                waited = True
                if _gone(call.request) or not await _still_enabled(state, caller):
                    break
                drained = _still_drained(ticket, own, step)
                continue
            drained = None
            # A long-poll outlives a worker that went silent (partitioned, paused): its connection
            # looks open, but a task handed through it would start late or never. Only a worker that
            # heartbeated within its lease gets one through a held request (None: it did not).
            look = await state.db(
                _lease_if_alive,
                state.catalog,
                ask.agent_id,
                capacity,
                lease_seconds,
                check_alive=waited,
                handed=handed,
            )
            if look is None:
                break
            looked = ticket if len(look.tasks) < capacity else None
            if look.tasks:
                tasks = _wire_tasks(state, look.tasks)
                break
            if handed and look.others_ready:
                # Woken for a task it may not take (allowed_workers): every other waiter looks, so
                # that one that may run it does. (None ready: another long-poll, or master, took it.)
                state.wakeups.notify_others(ticket)
            handed = False
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if leased := await _wait(ticket, own, step, asks, remaining):
                looked = ticket if len(leased) < capacity else None
                tasks = _wire_tasks(state, leased)
                break
            handed = ticket.handed
            waited = True
            if _gone(call.request) or not await _still_enabled(state, caller):
                # The worker hung up, or was disabled or revoked while it waited: leasing now would hand
                # a task to nobody, to sit until its lease expires.
                break
            drained = _still_drained(ticket, own, step)
    finally:
        if handed and not tasks:
            # Ending without having looked (the worker hung up, went silent, must heartbeat...): the
            # task is still there for the next waiter.
            state.wakeups.notify_one(TASKS)
    if looked is not None and not state.closing:
        state.drained_looks[agent_key] = looked
    if tasks:
        leased_text = ", ".join(f"task {t['task_id']}#{t['attempt']}" for t in tasks)
        # DEBUG: one line per lease request is hundreds a second under load (make bench), and the
        # execution's own status and events already say which worker took it.
        log.debug("leased %s to %s", leased_text, safe(caller.worker_label))
    body: dict[str, Any] = {"tasks": tasks}  # a protocol.LeaseReply
    if hint:
        body["heartbeat_now"] = True  # sent only when true: workers before it refuse unknown fields
    return json_response(body)


def _wire_tasks(state: MasterState, leased: list[TaskAssignment]) -> list[dict[str, Any]]:
    """Leased tasks as the wire's ``protocol.TaskAssignment``, their sensitive values opened.

    Opened here, for this worker's own tasks, inside its TLS channel. The catalog's record has the
    fields and types of the wire message, so its JSON form is the message: decoding it into
    protocol.TaskAssignment only to encode it again was a tenth of the lease route (make bench).
    """
    return [state.unsealed(t.to_dict()) for t in leased]


async def _wait(
    ticket: Ticket, own: Ticket, step: Ticket, asks: LeaseAsk, timeout: float
) -> list[TaskAssignment] | None:
    """Wait for news of tasks, of the worker, or of a rotation step; return the tasks a submit
    leased for this long-poll meanwhile, if one did (see ``catalog._handoff``)."""
    ticket.ask = asks
    await wait_any((ticket, own, step), timeout)
    return await handed_over(ticket)


def _still_drained(ticket: Ticket, own: Ticket, step: Ticket) -> Ticket | None:
    """``ticket`` if the wait ended for the worker's own news or a rotation step, not for tasks.

    Then no task became ready since the last look: the long-poll answers the step, or waits again
    on the same ticket, without a look in the catalog. None after news of tasks, or a timeout.
    """
    if ticket.notified or not (own.notified or step.notified):
        return None
    return ticket


@dataclass(frozen=True)
class _Look:
    """What one look of a lease long-poll in the catalog found."""

    tasks: list[TaskAssignment]
    #: Tasks it did not lease are ready (asked only when it leased none after a wake-up of its own).
    others_ready: bool = False


def _lease_if_alive(
    catalog: Catalog, agent_id: str, capacity: int, lease_seconds: float, *, check_alive: bool, handed: bool
) -> _Look | None:
    """Lease tasks; with ``check_alive``, only if the worker heartbeated within its lease (else None).

    All on the catalog's thread in one call: a woken long-poll is the idle path from a submit to
    its start, and each hop to that thread and back costs it a scheduling round (make bench).
    """
    if check_alive and not catalog.worker_alive(agent_id, timedelta(seconds=lease_seconds)):
        return None
    leased = catalog.lease_tasks(agent_id, capacity, lease_seconds)
    if leased or not handed:
        return _Look(leased)
    ready, _ = catalog.queue_summary()
    return _Look(leased, others_ready=ready > 0)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _still_enabled(state: MasterState, caller: Caller) -> bool:
    assert caller.thumbprint is not None  # noqa: S101 - worker routes always have a certificate
    principal = await state.principals.get(caller.thumbprint)
    return principal is not None and principal.enabled and principal.cert_status == "active"


async def task_heartbeat(call: Call) -> web.StreamResponse:
    """Extend the leases a worker still runs; tell it which to cancel and which it lost."""
    state, caller = call.state, call.caller
    beat = await call.message(protocol.TaskHeartbeat)
    require_agent(caller, beat.agent_id)
    extended: list[protocol.LeaseRef] = []
    cancel: list[protocol.LeaseRef] = []
    lost: list[protocol.LeaseRef] = []
    # The catalog answers by task id; each round names a task once, so its answer says which
    # attempt it means. A worker names one attempt per task, so there is one round in practice.
    remaining = list(dict.fromkeys(beat.leases))
    while remaining:
        this_round: list[protocol.LeaseRef] = []
        later: list[protocol.LeaseRef] = []
        for ref in remaining:
            named = any(ref.task_id == other.task_id for other in this_round)
            (later if named else this_round).append(ref)
        remaining = later
        status = await state.db(
            state.catalog.extend_leases,
            beat.agent_id,
            [(ref.task_id, ref.attempt) for ref in this_round],
            _lease_seconds(beat.lease_seconds),
        )
        held, stopping = set(status.extended), set(status.cancel)
        for ref in this_round:
            (extended if ref.task_id in held else lost).append(ref)
            if ref.task_id in held and ref.task_id in stopping:
                cancel.append(ref)
    reply = protocol.TaskHeartbeatReply(extended=extended, cancel=cancel, lost=lost)
    return json_response(protocol.encode(reply))


def _event_inputs(events: list[protocol.EventMessage], where: str) -> list[EventInput]:
    return [
        EventInput(
            execution_id=e.execution_id,
            task_id=e.task_id,
            attempt=e.attempt,
            seq=e.seq,
            time=parse_aware_time(e.time, f"{where}[{i}].time"),
            level=e.level,
            source=e.source,
            message=e.message,
        )
        for i, e in enumerate(events)
    ]


def _completion_reports(reports: list[protocol.CompletionReport]) -> list[CompletionReport]:
    return [
        CompletionReport(
            task_id=r.task_id, attempt=r.attempt, outcome=r.outcome, exit_code=r.exit_code, message=r.message
        )
        for r in reports
    ]


def _results(results: list[CompletionResult]) -> list[protocol.CompletionResult]:
    return [protocol.CompletionResult(r.task_id, r.accepted, r.stale) for r in results]


async def events(call: Call) -> web.StreamResponse:
    """Store a batch of event messages; a resent batch is acknowledged again and stored once."""
    state, caller = call.state, call.caller
    batch = await call.message(protocol.EventBatch)
    require_agent(caller, batch.agent_id)
    inputs = _event_inputs(batch.events, "EventBatch.events")
    # Only events of leases this worker holds or held last are stored; seq < 1 is a 400 (InvalidValue).
    stored = await state.db(state.catalog.add_events, batch.agent_id, inputs) if inputs else 0
    if stored:
        state.wakeups.notify(EVENTS)
    return json_response(protocol.encode(protocol.EventAck(acknowledged=len(inputs), stored=stored)))


async def complete(call: Call) -> web.StreamResponse:
    """Record task outcomes; a repeated report of the same lease is accepted again, harmlessly."""
    state, caller = call.state, call.caller
    batch = await call.message(protocol.CompletionBatch)
    require_agent(caller, batch.agent_id)
    reports = _completion_reports(batch.reports)
    results = await state.db(state.catalog.complete_tasks, batch.agent_id, reports) if reports else []
    state.wakeups.notify(EVENTS)
    return json_response(protocol.encode(protocol.CompletionReply(results=_results(results))))


async def report(call: Call) -> web.StreamResponse:
    """Store event messages, then the completion reports they unblock, in one catalog transaction.

    What :func:`events` and :func:`complete` do, with their rules and answers, in one request and
    one wake-up: a follower woken here sees the execution's last lines and its end together
    (with two requests it woke on the lines, found the execution running and had to ask again).
    When the batch asks for tasks (``lease_capacity``), the same transaction leases them, as a
    lease request that does not wait would.
    """
    state, caller = call.state, call.caller
    batch = await call.message(protocol.ReportBatch)
    require_agent(caller, batch.agent_id)
    inputs = _event_inputs(batch.events, "ReportBatch.events")
    reports = _completion_reports(batch.reports)
    capacity = max(0, min(batch.lease_capacity, MAX_CAPACITY))
    rotation = services_of(call).rotation
    # A rotation step waits on this worker: no tasks, and the answer says to heartbeat now (as a
    # lease request's would).
    hint = capacity > 0 and rotation is not None and rotation.needs_heartbeat(batch.agent_id)
    outcome = await services_of(call).executions.store_report(
        batch.agent_id,
        inputs,
        reports,
        lease_capacity=0 if hint or state.closing else capacity,
        lease_seconds=_lease_seconds(batch.lease_seconds),
    )
    if outcome.stored or reports:
        state.wakeups.notify(EVENTS)
        # Let the followers just woken (a run --wait waiting for its end) answer with what the
        # report's transaction read for them, or send their own catalog reads, before this reply is
        # encoded and written (make bench, latency: 0.3 ms sooner).
        await asyncio.sleep(0)
    body: dict[str, Any] = {  # a protocol.ReportReply
        "acknowledged": len(inputs),
        "stored": outcome.stored,
        "results": protocol.encode(_results(outcome.results)),
    }
    if batch.lease_capacity > 0:  # tasks and the hint only when asked for: see protocol.ReportReply
        body["tasks"] = _wire_tasks(state, outcome.leased)
        if hint:
            body["heartbeat_now"] = True
    return json_response(body)


async def project(call: Call) -> web.StreamResponse:
    """The deployed project archive with this SHA-256, for a worker about to run one of its packages."""
    state = call.state
    sha256 = call.request.match_info["sha256"]
    if len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256):
        raise bad_request(f"{sha256!r} is not a SHA-256 (64 hex digits)")
    data = await state.db(state.catalog.get_archive, sha256)
    return web.Response(body=data, content_type="application/zip")


ENDPOINTS = (
    Endpoint(
        "POST",
        routes.WORKER_HEARTBEAT,
        heartbeat,
        "certificate",
        "Worker heartbeat; registers an unknown worker (disabled) and says whether it may lease",
        body=protocol.Heartbeat,
        answer=protocol.HeartbeatReply,
        identify=False,
    ),
    Endpoint(
        "POST",
        routes.WORKER_LEASE,
        lease,
        "worker",
        "Lease ready tasks; long-polls up to wait_seconds (at most 30) until one is ready",
        body=protocol.LeaseRequest,
        answer=protocol.LeaseReply,
    ),
    Endpoint(
        "POST",
        routes.WORKER_TASK_HEARTBEAT,
        task_heartbeat,
        "worker",
        "Extend task leases; lists leases to cancel and leases lost",
        body=protocol.TaskHeartbeat,
        answer=protocol.TaskHeartbeatReply,
    ),
    Endpoint(
        "POST",
        routes.WORKER_EVENTS,
        events,
        "worker",
        "Store event messages (idempotent per task attempt and seq)",
        body=protocol.EventBatch,
        answer=protocol.EventAck,
    ),
    Endpoint(
        "POST",
        routes.WORKER_COMPLETE,
        complete,
        "worker",
        "Report task outcomes (idempotent per lease)",
        body=protocol.CompletionBatch,
        answer=protocol.CompletionReply,
    ),
    Endpoint(
        "POST",
        routes.WORKER_REPORT,
        report,
        "worker",
        "Store event messages, then the completion reports they unblock, in one transaction "
        "(idempotent as the events and completion routes)",
        body=protocol.ReportBatch,
        answer=protocol.ReportReply,
    ),
    Endpoint(
        "GET",
        routes.WORKER_PROJECT,
        project,
        "worker",
        "Download a deployed project archive by SHA-256",
        answer="zip",
    ),
)
