"""``packfleet deploy``, ``run`` and ``executions``: projects in, package executions out, logs back."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from packfleet.cli._client import call, state
from packfleet.cli._main import cli
from packfleet.cli._output import json_option
from packfleet.errors import ApiError, ExecutionFailed, TlsError, TransportError, UsageError
from packfleet.manager import ManagerClient
from packfleet.packages import archive_sha256, build_archive, load_project

SUCCEEDED = 7
FINISHED = {3, 4, 6, 7, 9}
_LEVEL_STYLE = {120: "red", 110: "yellow"}


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
            f"deployed {folder}/{record['project']} version {record['version']} "
            f"(packages: {', '.join(p['name'] for p in record.get('packages', []))})"
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


def _event_line(event: dict[str, Any]) -> str:
    stamp = str(event.get("message_time", ""))[11:23]
    text = event.get("message", "")
    style = _LEVEL_STYLE.get(int(event.get("message_type", 70)))
    source = event.get("message_source", "")
    line = f"{stamp} [{source}] {text}"
    return f"[{style}]{line}[/]" if style else line


async def _follow(
    client: ManagerClient, execution_id: int, out: Console | None, *, quiet_json: bool
) -> dict[str, Any]:
    """Stream an execution's events until it finishes; return its final record."""
    after = 0
    last_status = None
    while True:
        page = await _page(client, execution_id, after)
        for event in page.get("events", []):
            after = max(after, int(event["id"]))
            if out is not None and not quiet_json:
                out.print(_event_line(event), markup=True, highlight=False)
        execution = page.get("execution") or await client.get_execution(execution_id)
        status = execution.get("status")
        if out is not None and not quiet_json and status != last_status:
            out.print(f"[dim]execution {execution_id}: {execution.get('status_name', status)}[/]")
            last_status = status
        if status in FINISHED and not page.get("events"):
            return execution


#: How long ``run`` keeps resending a submit, and ``--wait`` keeps asking for events, while the master
#: cannot be reached: a master restart or a catalog failover takes seconds to a minute.
RECONNECT_SECONDS = 120.0


async def _page(client: ManagerClient, execution_id: int, after: int) -> dict[str, Any]:
    """The next page of events, asked again while the master is unreachable (a restart)."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    while True:
        try:
            return await client.events(execution_id, after_id=after, wait=15)
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
    metavar="AGENT_ID",
    help="Allow only these workers (repeatable). Default: any.",
)
@click.option(
    "--retry",
    "retry_count",
    default=0,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Times to retry if the worker is lost.",
)
@click.option("--wait", is_flag=True, help="Follow progress and logs; exit 0 only if the execution succeeds.")
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
    idempotency_key: str | None,
) -> None:
    """Run a package on any worker (or the ones given): SSIS "Execute Package in Scale Out".

    \b
    packfleet run default/etl/load --param batch_size=100 --wait
    packfleet run default/etl/load --worker 6f1c... --retry 2

    A submit whose answer is lost (connection dropped, master restarting) is sent again with the
    same idempotency key, so it never creates two executions.
    """
    folder, project, package = _split_target(target)
    parameters = _parse_params(params)
    key = idempotency_key or str(uuid.uuid4())
    st = state()

    async def action(client: ManagerClient) -> dict[str, Any]:
        execution = await client.run(
            folder,
            project,
            package,
            parameters,
            list(workers),
            retry_count,
            idempotency_key=key,
            retry_for=RECONNECT_SECONDS,
        )
        if not wait:
            return execution
        st.note(
            f"execution {execution['execution_id']} created; "
            "following it (Ctrl+C stops following, not the run)"
        )
        return await _follow(client, int(execution["execution_id"]), st.out, quiet_json=st.json)

    started = time.monotonic()
    execution = call(action)
    if not wait:
        st.emit(
            execution,
            lambda out: out.print(
                f"execution {execution['execution_id']} created ({execution.get('status_name')})"
            ),
        )
        return
    elapsed = time.monotonic() - started
    st.emit(
        execution,
        lambda out: out.print(
            f"execution {execution['execution_id']} {execution.get('status_name')} in {elapsed:.1f} s"
        ),
    )
    if execution.get("status") != SUCCEEDED:
        raise ExecutionFailed(
            f"execution {execution['execution_id']} {execution.get('status_name')}",
            fix=f"packfleet executions logs {execution['execution_id']}",
        )


@cli.group("executions")
def executions_group() -> None:
    """List, inspect, follow and cancel package executions."""


def _executions_table(out: Console, rows: list[dict[str, Any]]) -> None:
    table = Table("id", "package", "status", "worker", "attempt", "created", "ended")
    for e in rows:
        task = e.get("task") or {}
        table.add_row(
            str(e["execution_id"]),
            f"{e['folder']}/{e['project']}/{e['package']}",
            str(e.get("status_name", e.get("status"))),
            task.get("agent_id") or "-",
            str(task.get("attempt", "-")),
            str(e.get("created_at", ""))[:19],
            str(e.get("ended_at") or "")[:19],
        )
    out.print(table)


@executions_group.command("list")
@click.option(
    "--status", type=int, help="Only executions with this SSIS status code (7 succeeded, 4 failed...)."
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@json_option
def executions_list(status: int | None, limit: int) -> None:
    """List recent executions, newest first."""
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
    """Print an execution's event messages (stdout, stderr, package log calls, system notes)."""
    st = state()

    async def action(client: ManagerClient) -> list[dict[str, Any]]:
        if follow and not st.json:
            await _follow(client, execution_id, st.out, quiet_json=False)
            return []
        events: list[dict[str, Any]] = []
        after = 0
        for _ in range(10_000):  # pages of up to 1000; bounded
            page = await client.events(execution_id, after_id=after, wait=0)
            batch = page.get("events", [])
            if not batch:
                break
            events += batch
            after = int(batch[-1]["id"])
        if follow:
            final = await _follow(client, execution_id, None, quiet_json=True)
            del final
        return events

    events = call(action)
    if follow and not st.json:
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
    state().emit(record, lambda out: out.print(f"execution {execution_id}: {record.get('status_name')}"))


@cli.group("projects")
def projects_group() -> None:
    """Deployed projects in the catalog."""


@projects_group.command("list")
@json_option
def projects_list() -> None:
    """List deployed projects (latest version of each) and their packages."""
    rows = call(lambda c: c.list_projects())

    def human(out: Console) -> None:
        table = Table("folder", "project", "version", "packages", "deployed")
        for p in rows:
            table.add_row(
                p["folder"],
                p["project"],
                str(p["version"]),
                ", ".join(k["name"] for k in p.get("packages", [])),
                str(p.get("deployed_at", ""))[:19],
            )
        out.print(table)

    state().emit(rows, human)
