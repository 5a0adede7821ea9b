"""The console's reading pages: dashboard, workers, executions, certificates, audit.

Every page is plain HTML that works without JavaScript; filters, sorting and paging live in the URL
(GET forms), so a page can be bookmarked and shared.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from datetime import timedelta
from typing import Any

from aiohttp import web

from packfleet.catalog import ExecutionStatus
from packfleet.console._manage import drain_progress
from packfleet.console._views import ONLINE_WINDOW, ago, duration, page_numbers, when, worker_view
from packfleet.console._web import ConsoleRefusal, fleet_of, render, viewer_of
from packfleet.errors import CatalogError
from packfleet.expiry import expiry_warning

PAGE_SIZE = 25
#: The execution page shows this many event messages as HTML; the live tail brings the rest.
EVENTS_ON_PAGE = 2000


def _int(request: web.Request, name: str, default: int, *, minimum: int = 1, maximum: int = 10**9) -> int:
    raw = request.query.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConsoleRefusal(400, f"{name}={raw!r} in the address is not a whole number") from None
    if not minimum <= value <= maximum:
        raise ConsoleRefusal(400, f"{name}={value} in the address is out of range {minimum}..{maximum}")
    return value


def _query(request: web.Request, **changes: Any) -> str:
    """The current query string with ``changes`` (None removes a key): links that keep the filters."""
    params = {k: v for k, v in request.query.items() if v}
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    return "?" + urllib.parse.urlencode(params)


def _certificates(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inventory entries with every optional key present (templates are strict about missing ones)."""
    for entry in entries:
        for key in ("worker", "name", "status", "sha256", "warning", "days_left", "not_after"):
            entry.setdefault(key, None)
    return entries


# --- dashboard ---------------------------------------------------------------------------------


async def dashboard(request: web.Request) -> web.StreamResponse:
    fleet = fleet_of(request)
    now = fleet.now()
    facts = fleet.facts()
    try:
        await fleet.db(fleet.catalog.ping)
        reachable = True
    except CatalogError:
        reachable = False
    workers = await fleet.db(fleet.catalog.list_workers) if reachable else []
    states: dict[str, int] = {}
    for worker in workers:
        view = worker_view(worker, now)
        states[view.state] = states.get(view.state, 0) + 1
    waiting, oldest = await fleet.db(fleet.catalog.queue_summary) if reachable else (0, None)
    counts = (
        await fleet.db(fleet.catalog.execution_counts, since=now - timedelta(hours=24)) if reachable else {}
    )
    certificates = _certificates(await fleet.certificates()) if reachable else []
    master_cert = next((c for c in certificates if c.get("status") == "serving"), None)
    expiring = [c for c in certificates if c.get("warning") and c.get("status") not in ("revoked", "retired")]
    return render(
        request,
        "dashboard.html",
        title="Dashboard",
        facts=facts,
        uptime=duration((now - facts.started_at).total_seconds()),
        reachable=reachable,
        states=sorted(states.items()),
        workers_total=len(workers),
        waiting=waiting,
        oldest=ago(oldest, now) if oldest is not None else "",
        counts=[(status.label, counts.get(status, 0)) for status in ExecutionStatus],
        master_cert=master_cert,
        expiring=expiring,
    )


# --- workers -----------------------------------------------------------------------------------

_WORKER_SORTS = {
    "name": lambda v: v.name.casefold(),
    "state": lambda v: v.state,
    "heartbeat": lambda v: v.record.last_online_time.timestamp() if v.record.last_online_time else 0.0,
    "running": lambda v: v.running,
    "cert": lambda v: v.cert_days if v.cert_days is not None else float("inf"),
}


async def workers(request: web.Request) -> web.StreamResponse:
    fleet = fleet_of(request)
    now = fleet.now()
    views = [worker_view(w, now) for w in await fleet.db(fleet.catalog.list_workers)]
    search = request.query.get("q", "").strip()
    state = request.query.get("state", "")
    sort = request.query.get("sort", "name")
    if sort not in _WORKER_SORTS:
        raise ConsoleRefusal(400, f"sort={sort!r} is not one of {', '.join(_WORKER_SORTS)}")
    descending = request.query.get("order", "asc") == "desc"
    if search:
        needle = search.casefold()
        views = [
            v
            for v in views
            if needle
            in " ".join(
                (v.name, v.record.agent_id, v.record.machine_name, v.record.tags, v.thumbprint)
            ).casefold()
        ]
    if state:
        views = [v for v in views if state in v.state.split(", ")]
    views.sort(key=_WORKER_SORTS[sort], reverse=descending)
    page = _int(request, "page", 1)
    shown = views[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    return render(
        request,
        "workers.html",
        title="Workers",
        workers=shown,
        total=len(views),
        q=search,
        state=state,
        sort=sort,
        order="desc" if descending else "asc",
        paging=page_numbers(page, len(views) > page * PAGE_SIZE),
        query=lambda **kw: _query(request, **kw),
        done=request.query.get("done", ""),
        when=when,
    )


async def worker(request: web.Request) -> web.StreamResponse:
    fleet = fleet_of(request)
    record = await fleet.db(fleet.catalog.get_worker, request.match_info["agent_id"])
    now = fleet.now()
    recent = await fleet.db(fleet.catalog.list_executions, limit=10, agent_id=record.agent_id)
    drain = await drain_progress(request, record.agent_id, record.is_enabled)
    return render(
        request,
        "worker.html",
        title=f"Worker {record.display_name or record.agent_id}",
        w=worker_view(record, now),
        executions=recent,
        when=when,
        done=request.query.get("done", ""),
        window=int(ONLINE_WINDOW.total_seconds() // 60),
        drain=drain,
    )


async def confirm_delete(request: web.Request) -> web.StreamResponse:
    """Step one of deleting a worker: say what will happen and ask again."""
    viewer = viewer_of(request)
    fleet = fleet_of(request)
    record = await fleet.db(fleet.catalog.get_worker, request.match_info["agent_id"])
    return render(
        request,
        "worker_delete.html",
        title=f"Delete worker {record.display_name or record.agent_id}",
        w=worker_view(record, fleet.now()),
        allowed=viewer.may("admin"),
    )


# --- executions --------------------------------------------------------------------------------

_EXECUTION_FILTERS = ("folder", "project", "package", "caller", "worker")


async def executions(request: web.Request) -> web.StreamResponse:
    fleet = fleet_of(request)
    page = _int(request, "page", 1)
    status = _int(request, "status", 0, minimum=0, maximum=9) or None
    filters = {name: request.query.get(name, "").strip() for name in _EXECUTION_FILTERS}
    agent_id = filters["worker"] or None
    if agent_id is not None:
        with contextlib.suppress(CatalogError):
            agent_id = (await fleet.db(fleet.catalog.get_worker, agent_id)).agent_id
    records = await fleet.db(
        fleet.catalog.list_executions,
        limit=PAGE_SIZE + 1,
        offset=(page - 1) * PAGE_SIZE,
        status=status,
        folder=filters["folder"] or None,
        project=filters["project"] or None,
        package=filters["package"] or None,
        created_by=filters["caller"] or None,
        agent_id=agent_id,
    )
    now = fleet.now()
    rows = []
    for record in records[:PAGE_SIZE]:
        end = record.ended_at or (now if record.started_at else None)
        rows.append(
            {
                "r": record,
                "duration": duration((end - record.started_at).total_seconds())
                if record.started_at and end
                else "",
            }
        )
    return render(
        request,
        "executions.html",
        title="Executions",
        rows=rows,
        statuses=list(ExecutionStatus),
        status=status or 0,
        filters=filters,
        paging=page_numbers(page, len(records) > PAGE_SIZE),
        query=lambda **kw: _query(request, **kw),
        when=when,
    )


async def execution(request: web.Request) -> web.StreamResponse:
    fleet = fleet_of(request)
    execution_id = _execution_id(request)
    record = await fleet.db(fleet.catalog.get_execution, execution_id)
    shown = await fleet.shown_execution(record)
    events = await fleet.db(fleet.catalog.get_events, execution_id, limit=EVENTS_ON_PAGE)
    attempts: dict[tuple[int, int], int] = {}
    for event in events:
        attempts[(event.task_id, event.attempt)] = attempts.get((event.task_id, event.attempt), 0) + 1
    now = fleet.now()
    end = record.ended_at or (now if record.started_at else None)
    return render(
        request,
        "execution.html",
        title=f"Execution {execution_id}",
        r=record,
        parameters=shown["parameters"],
        events=events,
        truncated=len(events) == EVENTS_ON_PAGE,
        last_id=events[-1].id if events else 0,
        attempts=sorted(attempts.items()),
        duration=duration((end - record.started_at).total_seconds()) if record.started_at and end else "",
        when=when,
        done=request.query.get("done", ""),
    )


def _execution_id(request: web.Request) -> int:
    raw = request.match_info["execution_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ConsoleRefusal(404, f"{raw!r} is not an execution id (a whole number)")
    return int(raw)


# --- certificates and audit --------------------------------------------------------------------


async def certificates(request: web.Request) -> web.StreamResponse:
    fleet = fleet_of(request)
    entries = _certificates(await fleet.certificates())
    worker_names = {w.agent_id: w.display_name for w in await fleet.db(fleet.catalog.list_workers)}
    for entry in entries:
        entry["worker_name"] = worker_names.get(entry.get("worker") or "", "")
    entries.sort(key=lambda e: (e["days_left"] is None, e["days_left"] or 0.0))
    return render(request, "certificates.html", title="Certificates", entries=entries, warning=expiry_warning)


async def audit(request: web.Request) -> web.StreamResponse:
    fleet = fleet_of(request)
    before = _int(request, "before", 0, minimum=0, maximum=2**62) or None
    filters = {name: request.query.get(name, "").strip() for name in ("actor", "action", "target")}
    rows = await fleet.db(
        fleet.catalog.list_audit,
        limit=PAGE_SIZE + 1,
        newest=True,
        before_id=before,
        actor=filters["actor"] or None,
        action=filters["action"] or None,
        target=filters["target"] or None,
    )
    rows = rows[::-1]  # newest first on the page
    has_older = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return render(
        request,
        "audit.html",
        title="Audit log",
        rows=rows,
        filters=filters,
        older=rows[-1].id if has_older and rows else None,
        newer=bool(before),
        query=lambda **kw: _query(request, **kw),
        when=when,
    )
