"""The console's reading pages: dashboard, workers, executions, certificates, audit.

Every page is plain HTML that works without JavaScript; filters, sorting and paging live in the URL
(GET forms), so a page can be bookmarked and shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from datetime import timedelta
from typing import Any

from aiohttp import web

from packfleet.catalog import WORKER_SORTS, WORKER_STATES, EventRecord, ExecutionStatus
from packfleet.console._inventory import inventory_of
from packfleet.console._manage import drain_progress
from packfleet.console._rotation import rotation_view
from packfleet.console._views import ONLINE_WINDOW, ago, duration, page_numbers, when, worker_view
from packfleet.console._web import ConsoleRefusal, fleet_of, render, viewer_of
from packfleet.errors import CatalogError
from packfleet.expiry import expiry_warning

PAGE_SIZE = 25
#: The dashboard counts queued tasks and each status of the last 24 hours up to this many: its cost
#: stays bounded whatever the catalog holds (/metrics and the CLI give exact figures).
COUNT_CAP = 10_000
#: Certificates per page of the Certificates page.
CERTIFICATES_PAGE = 100
#: The execution page shows event messages in windows of this many: a log of up to two windows
#: whole, a longer one its first and last window with links to those in between.
EVENT_WINDOW = 500
#: Links to this many windows at each end of the hidden part of a long log.
WINDOW_LINKS = 5


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
    counted: dict[tuple[bool, bool], int] = {}
    waiting, oldest = 0, None
    counts: dict[ExecutionStatus, int] = {}
    certificates: list[dict[str, Any]] = []
    if reachable:
        # Four independent reads at once: the catalog's threads overlap their waits on the database.
        counted, (waiting, oldest), counts, certificates = await asyncio.gather(
            fleet.db(fleet.catalog.worker_counts, now=now, online_window=ONLINE_WINDOW),
            fleet.db(fleet.catalog.queue_depth, cap=COUNT_CAP),
            fleet.db(fleet.catalog.recent_counts, since=now - timedelta(hours=24), cap=COUNT_CAP),
            inventory_of(request).entries(fleet),
        )
    states = {
        f"{'online' if online else 'offline'}, {'enabled' if enabled else 'disabled'}": n
        for (online, enabled), n in counted.items()
    }
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
        workers_total=sum(states.values()),
        waiting=_counted(waiting),
        queued=waiting > 0,
        oldest=ago(oldest, now) if oldest is not None else "",
        counts=[(status.label, _counted(counts[status])) for status in ExecutionStatus if counts.get(status)],
        master_cert=master_cert,
        expiring=expiring,
    )


def _counted(n: int) -> str:
    """A bounded count as the dashboard shows it: ``more than 10,000`` past the cap."""
    return f"more than {COUNT_CAP:,}" if n > COUNT_CAP else f"{n:,}"


# --- workers -----------------------------------------------------------------------------------


async def workers(request: web.Request) -> web.StreamResponse:
    """One page of workers: search, state filter, sort (worst first by default) and paging, all in
    the catalog's query: a fleet of thousands costs what a page of 25 costs."""
    fleet = fleet_of(request)
    now = fleet.now()
    search = request.query.get("q", "").strip()[:200]
    state = request.query.get("state", "")
    if state and state not in WORKER_STATES:
        raise ConsoleRefusal(400, f"state={state!r} is not one of {', '.join(WORKER_STATES)}")
    sort = request.query.get("sort", "state")
    if sort not in WORKER_SORTS:
        raise ConsoleRefusal(400, f"sort={sort!r} is not one of {', '.join(WORKER_SORTS)}")
    descending = request.query.get("order", "asc") == "desc"
    page = _int(request, "page", 1, maximum=10**6)
    found = await fleet.db(
        fleet.catalog.worker_page,
        now=now,
        online_window=ONLINE_WINDOW,
        search=search,
        state=state,
        sort=sort,
        descending=descending,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    return render(
        request,
        "workers.html",
        title="Workers",
        workers=[worker_view(w, now) for w in found.workers],
        total=found.total,
        q=search,
        state=state,
        sort=sort,
        order="desc" if descending else "asc",
        paging=page_numbers(page, found.total > page * PAGE_SIZE),
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
        download=lambda kind: f"/audit/download.{kind}" + _query(request, before=None),
        when=when,
    )


async def execution(request: web.Request) -> web.StreamResponse:
    """An execution and a bounded page of its event messages.

    A log of up to two windows is shown whole. A longer one shows its head and its tail window (the
    live tail goes on from the last line) with links to the windows in between; ``?window=N`` shows
    window N alone (no live tail: it is history).
    """
    fleet = fleet_of(request)
    execution_id = _execution_id(request)
    record = await fleet.db(fleet.catalog.get_execution, execution_id)
    shown = await fleet.shown_execution(record)
    total = await fleet.db(fleet.catalog.count_events, execution_id)
    windows = max(1, -(-total // EVENT_WINDOW))
    chosen = _int(request, "window", 0, minimum=1, maximum=windows) if request.query.get("window") else None
    head = await fleet.db(
        fleet.catalog.event_window,
        execution_id,
        offset=(chosen - 1) * EVENT_WINDOW if chosen else 0,
        limit=EVENT_WINDOW if chosen or total > 2 * EVENT_WINDOW else 2 * EVENT_WINDOW,
    )
    tail: list[EventRecord] = []
    if chosen is None and total > 2 * EVENT_WINDOW:
        tail = await fleet.db(
            fleet.catalog.event_window, execution_id, offset=-EVENT_WINDOW, limit=EVENT_WINDOW
        )
    hidden = [
        {"n": n, "first": (n - 1) * EVENT_WINDOW + 1, "last": min(n * EVENT_WINDOW, total)}
        for n in _window_links(windows, chosen)
    ]
    attempts = await fleet.db(fleet.catalog.event_attempts, execution_id)
    now = fleet.now()
    end = record.ended_at or (now if record.started_at else None)
    last = (tail or head)[-1].id if (tail or head) else 0
    return render(
        request,
        "execution.html",
        title=f"Execution {execution_id}",
        r=record,
        parameters=shown["parameters"],
        head=head,
        tail=tail,
        total=total,
        window=chosen,
        windows=windows,
        window_size=EVENT_WINDOW,
        hidden=hidden,
        live=chosen is None,
        last_id=last,
        attempts=attempts,
        duration=duration((end - record.started_at).total_seconds()) if record.started_at and end else "",
        when=when,
        done=request.query.get("done", ""),
    )


def _window_links(windows: int, chosen: int | None) -> list[int]:
    """Which windows get a link: every one of a short log; of a long one the first and last few and
    those around the one shown (the page also has a form that opens any window by number)."""
    if windows <= 2:
        return []
    inner = range(1, windows + 1) if chosen else range(2, windows)
    if len(inner) <= 2 * WINDOW_LINKS:
        return list(inner)
    picked = set(inner[:WINDOW_LINKS]) | set(inner[-WINDOW_LINKS:])
    if chosen:
        picked |= {n for n in range(chosen - 2, chosen + 3) if 1 <= n <= windows}
    return sorted(picked)


def _execution_id(request: web.Request) -> int:
    raw = request.match_info["execution_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ConsoleRefusal(404, f"{raw!r} is not an execution id (a whole number)")
    return int(raw)


# --- certificates and audit --------------------------------------------------------------------


async def certificates(request: web.Request) -> web.StreamResponse:
    """The rotation section, then the fleet's certificates, soonest expiry first, a page at a time
    (a fleet of thousands of workers has thousands), with a search and a role filter."""
    fleet = fleet_of(request)
    entries = await inventory_of(request).entries(fleet)
    roles = sorted({e["role"] for e in entries})
    role = request.query.get("role", "")
    search = request.query.get("q", "").strip()[:200]
    if role:
        entries = [e for e in entries if e["role"] == role]
    if search:
        needle = search.casefold().replace(" ", "").replace(":", "")
        entries = [
            e
            for e in entries
            if needle in e["thumbprint"].casefold()
            or needle in (e["sha256"] or "").casefold()
            or search.casefold() in f"{e['name'] or ''} {e['worker_name']} {e['worker'] or ''}".casefold()
        ]
    page = _int(request, "page", 1, maximum=10**6)
    rotation = await fleet.rotation_status()
    return render(
        request,
        "certificates.html",
        title="Certificates",
        entries=entries[(page - 1) * CERTIFICATES_PAGE : page * CERTIFICATES_PAGE],
        total=len(entries),
        roles=roles,
        role=role,
        q=search,
        paging=page_numbers(page, len(entries) > page * CERTIFICATES_PAGE),
        query=lambda **kw: _query(request, **kw),
        warning=expiry_warning,
        rotation=rotation_view(rotation),
        done=request.query.get("done", ""),
    )


def audit_filters(request: web.Request) -> dict[str, str]:
    """The audit page's filters from the address: who, what, target."""
    return {name: request.query.get(name, "").strip()[:256] for name in ("actor", "action", "target")}


async def audit(request: web.Request) -> web.StreamResponse:
    fleet = fleet_of(request)
    before = _int(request, "before", 0, minimum=0, maximum=2**62) or None
    filters = audit_filters(request)
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
        download=lambda kind: f"/audit/download.{kind}" + _query(request, before=None),
        when=when,
    )
