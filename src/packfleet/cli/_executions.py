"""``packfleet deploy``, ``run`` and ``executions``: projects in, package executions out, logs back."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from packfleet.cli._client import call, state
from packfleet.cli._main import cli
from packfleet.cli._output import Column, json_option, print_table, short_time, to_jsonable
from packfleet.errors import ApiError, ExecutionFailed, TlsError, TransportError, UsageError, WaitTimeout
from packfleet.manager import ManagerClient
from packfleet.packages import archive_sha256, build_archive, load_project
from packfleet.protocol import (
    MAX_RETRY_COUNT,
    Event,
    EventPage,
    Execution,
    ExecutionStatus,
    MessageType,
    PendingExplanation,
)

_LEVEL_STYLE: dict[int, str] = {MessageType.ERROR: "red", MessageType.WARNING: "yellow"}


@cli.command("deploy")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--folder", default="default", show_default=True, help="Catalog folder (SSIS folder).")
@json_option
def deploy(directory: Path, folder: str) -> None:
    """Deploy the project in DIRECTORY (its packfleet.toml) as a new version in the catalog.

    The project is checked and zipped here, and checked again by the master and by each worker.

    \b
    packfleet deploy examples/etl --folder default
    """
    project = load_project(directory)
    archive = build_archive(directory)
    st = state()
    st.note(
        f"deploying {project.name} {project.version} "
        f"({len(archive)} bytes, sha256 {archive_sha256(archive)[:12]}...)"
    )
    record = call(lambda c: c.deploy(folder, archive))
    st.emit(
        record,
        lambda out: out.print(
            f"deployed {folder}/{record.project} version {record.version} "
            f"(packages: {', '.join(p.name for p in record.packages)})"
        ),
    )


def _split_target(target: str) -> tuple[str, str, str]:
    parts = target.split("/")
    if len(parts) != 3 or not all(parts):
        raise UsageError(
            f"{target!r} is not FOLDER/PROJECT/PACKAGE",
            fix="packfleet run default/etl/load  (see packfleet projects list)",
        )
    return parts[0], parts[1], parts[2]


def _parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(
                f"--param {pair!r} is not NAME=VALUE", fix="packfleet run F/P/PKG --param batch_size=100"
            )
        params[name] = value
    return params


def _event_line(event: Event) -> str:
    stamp = event.message_time[11:23]
    style = _LEVEL_STYLE.get(event.message_type)
    line = f"{stamp} [{event.message_source}] {event.message}"
    return f"[{style}]{line}[/]" if style else line


#: While an execution is pending, how often ``run --wait`` asks the master why (seconds).
_EXPLAIN_EVERY = 3.0
_WAITING = {ExecutionStatus.CREATED, ExecutionStatus.PENDING}


class _Why:
    """Say why an execution is pending, on stderr, each time the reasons change."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.note = note
        self.last: list[str] = []

    def show(self, answer: PendingExplanation) -> None:
        reasons = list(answer.reasons)
        if not reasons and answer.ready:
            reasons = [f"waiting for {', '.join(answer.ready)} to lease it"]
        if reasons != self.last:
            self.last = reasons
            for line in reasons:
                self.note(f"pending: {escape(line)}")


async def _follow(
    client: ManagerClient,
    execution_id: int,
    out: Console | None,
    *,
    quiet_json: bool,
    why: _Why | None = None,
    timeout: float | None = None,
    first: EventPage | None = None,
    started: float | None = None,
) -> Execution:
    """Stream an execution's events until it finishes; return its final record.

    With ``why``, a pending execution's reasons are asked for every few seconds and shown when
    they change; with ``timeout``, :class:`WaitTimeout` ends the wait (the execution goes on),
    counted from ``started`` (a monotonic time; default now). ``first``: the first page, already
    in hand (a run request's answer with ``wait``).
    """
    after = 0
    last_status = None
    deadline = None if timeout is None else (time.monotonic() if started is None else started) + timeout
    status: ExecutionStatus | None = None
    for _ in range(10_000_000):  # bounded: each turn waits on the master or returns
        if first is not None:
            page, first = first, None
        else:
            page = await _page(client, execution_id, after, wait=_turn_wait(status, why, deadline))
        for event in page.events:
            after = max(after, event.id)
            if out is not None and not quiet_json:
                out.print(_event_line(event), markup=True, highlight=False)
        execution = page.execution
        status = execution.code
        if out is not None and not quiet_json and status != last_status:
            out.print(f"[dim]execution {execution_id}: {status.label}[/]")
            last_status = status
        if page.complete:
            return execution
        if why is not None and status in _WAITING:
            why.show(await client.pending(execution_id))
        if deadline is not None and deadline <= time.monotonic():
            raise _timed_out(execution_id, timeout or 0.0, why)
    raise _timed_out(execution_id, timeout or 0.0, why)


def _turn_wait(status: ExecutionStatus | None, why: _Why | None, deadline: float | None) -> float:
    """How long one follow request may be held: short while a pending run's reasons are shown
    (and for the first, which does not know the status yet), never past ``deadline``."""
    waiting = why is not None and status in _WAITING
    wait = _EXPLAIN_EVERY if waiting or status is None else 15.0
    if deadline is not None:
        wait = max(0.0, min(wait, deadline - time.monotonic()))
    return wait


def _timed_out(execution_id: int, timeout: float, why: _Why | None) -> WaitTimeout:
    reasons = "; ".join(why.last) if why is not None and why.last else "it had not finished"
    return WaitTimeout(
        f"execution {execution_id} did not finish within --timeout {timeout:g} s ({reasons}); "
        "it goes on without this command",
        fix=f"packfleet executions logs {execution_id} --follow  (or: packfleet executions cancel "
        f"{execution_id})",
    )


async def _stream_ndjson(client: ManagerClient, execution_id: int) -> None:
    """Write each event as one JSON line the moment the master hands it over, until the run ends."""
    after = 0
    for _ in range(1_000_000):  # bounded: each turn waits up to 15 s or returns events
        page = await _page(client, execution_id, after)
        for event in page.events:
            after = max(after, event.id)
            sys.stdout.write(json.dumps(event, default=to_jsonable) + "\n")
        sys.stdout.flush()
        if page.complete:
            return


#: How long ``run`` keeps resending a submit, and ``--wait`` keeps asking for events, while the master
#: cannot be reached: a master restart or a catalog failover takes seconds to a minute.
RECONNECT_SECONDS = 120.0


async def _page(client: ManagerClient, execution_id: int, after: int, *, wait: float = 15) -> EventPage:
    """The next page of events, asked again while the master is unreachable (a restart)."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    while True:
        try:
            return await client.events(execution_id, after_id=after, wait=wait)
        except TransportError as exc:
            lost = not isinstance(exc, ApiError | TlsError) or (
                isinstance(exc, ApiError) and exc.status in (502, 503, 504)
            )
            if not lost or time.monotonic() > deadline:
                raise
        await asyncio.sleep(1.0)


@cli.command("run")
@click.argument("target", metavar="FOLDER/PROJECT/PACKAGE")
@click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter value (repeatable)."
)
@click.option(
    "--worker",
    "workers",
    multiple=True,
    metavar="WORKER",
    help="Allow only these workers, each an agent id, a display name or a certificate thumbprint "
    "(repeatable). Default: any.",
)
@click.option(
    "--retry",
    "retry_count",
    default=0,
    show_default=True,
    type=click.IntRange(0, MAX_RETRY_COUNT),
    help="Times to retry if the worker is lost.",
)
@click.option("--wait", is_flag=True, help="Follow progress and logs; exit 0 only if the execution succeeds.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: stop waiting after this long, exit 10 (the execution goes on).",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    default=None,
    help="Submit with this key: the same key again returns the same execution. Default: a new one.",
)
@json_option
def run(
    target: str,
    params: tuple[str, ...],
    workers: tuple[str, ...],
    retry_count: int,
    wait: bool,
    timeout: float | None,
    idempotency_key: str | None,
) -> None:
    """Run a package on any worker (or the ones given): SSIS "Execute Package in Scale Out".

    \b
    packfleet run default/etl/load --param batch_size=100 --wait
    packfleet run default/etl/load --wait --timeout 300    # exit 10 if it has not finished
    packfleet run default/etl/load --worker worker1 --retry 2

    A submit whose answer is lost (connection dropped, master restarting) is sent again with the
    same idempotency key, so it never creates two executions.
    """
    folder, project, package = _split_target(target)
    parameters = _parse_params(params)
    key = idempotency_key or str(uuid.uuid4())
    if timeout is not None and not wait:
        raise UsageError(
            "--timeout applies to --wait only", fix=f"packfleet run {target} --wait --timeout 60"
        )
    st = state()

    async def action(client: ManagerClient) -> Execution:
        submit = (folder, project, package, parameters, list(workers), retry_count)
        if not wait:
            return await client.run(*submit, idempotency_key=key, retry_for=RECONNECT_SECONDS)
        # The submit's answer is the follow's first page (one request, not a submit and a follow).
        why = _Why(st.note)
        deadline = None if timeout is None else started + timeout
        first = await client.run_waiting(
            *submit,
            idempotency_key=key,
            retry_for=RECONNECT_SECONDS,
            wait=_turn_wait(None, why, deadline),
        )
        execution_id = first.execution.execution_id
        st.note(f"execution {execution_id} created; following it (Ctrl+C stops following, not the run)")
        return await _follow(
            client,
            execution_id,
            st.out,
            quiet_json=st.json,
            why=why,
            timeout=timeout,
            first=first,
            started=started,
        )

    started = time.monotonic()
    execution = call(action)
    if not wait:
        st.emit(
            execution,
            lambda out: out.print(f"execution {execution.execution_id} created ({execution.code.label})"),
        )
        return
    elapsed = time.monotonic() - started
    st.emit(
        execution,
        lambda out: out.print(
            f"execution {execution.execution_id} {execution.code.label} in {elapsed:.1f} s"
        ),
    )
    if execution.code != ExecutionStatus.SUCCEEDED:
        raise ExecutionFailed(
            f"execution {execution.execution_id} {execution.code.label}",
            fix=f"packfleet executions logs {execution.execution_id}",
        )


@cli.group("executions")
def executions_group() -> None:
    """List, inspect, follow and cancel package executions."""


def _executions_table(out: Console, rows: list[Execution]) -> None:
    lines = [
        [
            str(e.execution_id),
            f"{e.folder}/{e.project}/{e.package}",
            e.code.label,
            (e.task.agent_id if e.task else None) or "-",
            str(e.task.attempt) if e.task else "-",
            short_time(e.created_at),
            short_time(e.ended_at),
        ]
        for e in rows
    ]
    columns: list[Column | str] = ["id", "package", "status", Column("worker", key=True), "attempt"]
    print_table(out, [*columns, Column("created", key=True), Column("ended", key=True)], lines)


class StatusType(click.ParamType):  # type: ignore[type-arg]
    """An execution status: its SSIS name (``failed``, ``ended-unexpectedly``) or its code (4)."""

    name = "status"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return int(ExecutionStatus.by_word(str(value)))
        except ValueError as exc:
            self.fail(str(exc))


@executions_group.command("list")
@click.option(
    "--status",
    type=StatusType(),
    help="Only executions in this status: failed, succeeded, running, pending, canceled, "
    "ended-unexpectedly... (or the SSIS code, 4 for failed).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@json_option
def executions_list(status: int | None, limit: int) -> None:
    """List recent executions, newest first.

    \b
    packfleet executions list --status failed
    """
    rows = call(lambda c: c.list_executions(limit=limit, status=status))
    state().emit(rows, lambda out: _executions_table(out, rows))


@executions_group.command("show")
@click.argument("execution_id", type=int)
@json_option
def executions_show(execution_id: int) -> None:
    """Show one execution: status, parameters (sensitive ones masked), task, worker."""
    record = call(lambda c: c.get_execution(execution_id))
    state().emit(record, lambda out: _executions_table(out, [record]))


@executions_group.command("logs")
@click.argument("execution_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the execution ends.")
@json_option
def executions_logs(execution_id: int, follow: bool) -> None:
    """Print an execution's event messages (stdout, stderr, package log calls, system notes).

    With --follow --json: one JSON object per line (NDJSON), each written as the event arrives.
    """
    st = state()

    async def action(client: ManagerClient) -> list[Event]:
        if follow and st.json:
            await _stream_ndjson(client, execution_id)
            return []
        if follow:
            await _follow(client, execution_id, st.out, quiet_json=False)
            return []
        events: list[Event] = []
        after = 0
        for _ in range(10_000):  # pages of up to 1000; bounded
            page = await client.events(execution_id, after_id=after, wait=0)
            if not page.events:
                break
            events += page.events
            after = page.events[-1].id
        return events

    events = call(action)
    if follow:
        return

    def human(out: Console) -> None:
        for event in events:
            out.print(_event_line(event))

    st.emit(events, human)


@executions_group.command("cancel")
@click.argument("execution_id", type=int)
@json_option
def executions_cancel(execution_id: int) -> None:
    """Cancel an execution: a waiting one at once, a running one by stopping its process."""
    record = call(lambda c: c.cancel(execution_id))
    state().emit(record, lambda out: out.print(f"execution {execution_id}: {record.code.label}"))


@cli.group("projects")
def projects_group() -> None:
    """Deployed projects in the catalog."""


@projects_group.command("list")
@json_option
def projects_list() -> None:
    """List deployed projects (latest version of each) and their packages."""
    rows = call(lambda c: c.list_projects())

    def human(out: Console) -> None:
        lines = [
            [
                p.folder,
                p.project,
                str(p.version),
                ", ".join(k.name for k in p.packages),
                short_time(p.deployed_at),
            ]
            for p in rows
        ]
        print_table(out, ["folder", "project", "version", "packages", Column("deployed", key=True)], lines)

    state().emit(rows, human)
