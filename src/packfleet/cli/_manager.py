"""``packfleet manager``: the Scale Out Manager — connect, enable, disable and remove workers.

Every command talks to the master's admin API with the admin certificate named in this home's
ManagerSettings.config (``master init`` writes one on the master machine).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from packfleet.cli._client import call, state
from packfleet.cli._main import cli
from packfleet.cli._output import Column, json_option, print_table, short_time
from packfleet.expiry import expiry_warning
from packfleet.pki import load_credential
from packfleet.protocol import Worker, WorkerCertificate

# The colours of packfleet.expiry's warnings, shared with `manager certs`.
EXPIRY_STYLE = {"30d": "yellow", "7d": "red", "expired": "bold red"}


@cli.group("manager")
def manager_group() -> None:
    """The Scale Out Manager: administer the master's workers from the master or any machine.

    \b
    packfleet manager worker add --cert worker.cer --enable   # seed: install the worker cert on the master
    packfleet manager worker list
    packfleet manager worker disable AGENT_ID
    """


@manager_group.group("worker")
def worker_admin() -> None:
    """Connect, list, enable, disable, describe and delete workers."""


def _days_left(not_after: str | None) -> float | None:
    if not not_after:
        return None
    return (datetime.fromisoformat(not_after) - datetime.now(UTC)).total_seconds() / 86400


def _active_cert(worker: Worker) -> WorkerCertificate | None:
    certs = [c for c in worker.certificates if c.status == "active"]
    return max(certs, key=lambda c: c.not_after or "", default=None)


_STATE_STYLE = {"online": "green", "revoked": "bold red", "expired": "bold red", "offline": "yellow"}


def _state(worker: Worker) -> str:
    """The state the master computed (``state``, ``offline_seconds``), styled; never judged here."""
    word: str = worker.state
    if word == "offline" and worker.offline_seconds is not None:
        word = f"offline {int(worker.offline_seconds // 60)} min"
    style = _STATE_STYLE.get(worker.state)
    return f"[{style}]{word}[/]" if style else word


def _workers_table(out: Console, workers: list[Worker], *, wide: bool = False) -> None:
    # Here, not at the top: importing packfleet.master loads the whole master (server, catalog,
    # console), which every `packfleet` command would pay at start for this one helper.
    from packfleet.master import clock_warning

    rows: list[list[str]] = []
    skewed: list[str] = []
    for w in workers:
        if text := clock_warning(w.display_name or w.agent_id, w.clock_skew_seconds):
            skewed.append(text)
        cert = _active_cert(w)
        days = _days_left(cert.not_after if cert else None)
        expiry = "-" if days is None else f"{days:.0f} days"
        level = expiry_warning(days)
        if level is not None:
            expiry = f"[{EXPIRY_STYLE[level]}]{expiry} ({level})[/]"
        row = [w.agent_id, w.display_name, "yes" if w.is_enabled else "[yellow]no[/]", _state(w), expiry]
        if wide:
            row += [w.machine_name, w.tags, cert.thumbprint if cert else "-"]
        rows.append(row)
    columns: list[Column | str] = [Column("agent id", key=True), "name", "enabled", "state", "expires"]
    if wide:
        columns += ["machine", "tags", Column("certificate", key=True)]
    print_table(out, columns, rows)
    for text in skewed:
        out.print(f"[yellow]warning: {text}[/]")


@worker_admin.command("add")
@click.option(
    "--cert",
    "cert_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The worker's public certificate (worker.cer from its home).",
)
@click.option("--name", help="Display name until the worker reports its own.")
@click.option("--enable", is_flag=True, help="Enable the worker as soon as it connects.")
@click.option(
    "--worker",
    "worker_ref",
    help="An existing worker (agent id, thumbprint or name) this certificate is for: bound at once.",
)
@json_option
def worker_add(cert_file: Path, name: str | None, enable: bool, worker_ref: str | None) -> None:
    """Install a worker certificate into the master's Root store and register it.

    The seed's step "install the client certificate into the Root store of the master machine",
    done through the master so it takes effect without a restart. The worker appears in
    `manager worker list` at its first heartbeat, as a new worker; with --enable it may run tasks
    at once. A certificate is never bound to an existing worker unless --worker names it.

    \b
    packfleet manager worker add --cert /srv/w/worker.cer --name worker1 --enable
    packfleet manager worker add --cert /srv/w/second.cer --worker worker1
    """
    pem = load_credential(cert_file).cert_pem().decode()
    record = call(lambda c: c.add_worker(pem, display_name=name, enable=enable, worker=worker_ref))
    st = state()
    st.emit(
        record,
        lambda out: out.print(
            f"certificate {record.thumbprint} installed in the master's Root store; "
            + (
                f"bound to worker {record.agent_id}"
                if record.agent_id
                else "the worker will be enabled when it connects"
                if enable
                else "enable the worker when it has connected: packfleet manager worker enable NAME"
            )
        ),
    )


@worker_admin.command("list")
@click.option("--wide", is_flag=True, help="Also machine name, tags and certificate thumbprint.")
@json_option
def worker_list(wide: bool) -> None:
    """List workers: SSIS catalog.worker_agents columns, the master's view of their state (online,
    offline, never seen, revoked, expired) and certificate expiry.
    """
    workers = call(lambda c: c.list_workers())
    state().emit(workers, lambda out: _workers_table(out, workers, wide=wide))


@worker_admin.command("show")
@click.argument("ref")
@json_option
def worker_show(ref: str) -> None:
    """Show one worker, by agent id, display name or certificate thumbprint."""
    worker = call(lambda c: c.get_worker(ref))

    def human(out: Console) -> None:
        _workers_table(out, [worker], wide=True)
        info = worker.machine_info
        if info:
            out.print(", ".join(f"{k}: {v}" for k, v in info.items()))

    state().emit(worker, human)


def _toggle(ref: str, enable: bool) -> None:
    worker = call(lambda c: c.enable_worker(ref) if enable else c.disable_worker(ref))
    word = "enabled" if enable else "disabled"
    state().emit(worker, lambda out: out.print(f"worker {worker.agent_id} ({worker.display_name}) {word}"))


@worker_admin.command("enable")
@click.argument("ref")
@json_option
def worker_enable(ref: str) -> None:
    """Let a worker take tasks (SSIS: Enable Worker)."""
    _toggle(ref, True)


@worker_admin.command("disable")
@click.argument("ref")
@json_option
def worker_disable(ref: str) -> None:
    """Stop giving a worker tasks; its open connections are closed (SSIS: Disable Worker)."""
    _toggle(ref, False)


@worker_admin.command("delete")
@click.argument("ref")
@json_option
def worker_delete(ref: str) -> None:
    """Remove a worker and its certificates from the master's Root store and catalog.

    The seed's "delete the worker and add it again" starts here; then `manager worker add`.
    """
    result = call(lambda c: c.delete_worker(ref))
    state().emit(result, lambda out: out.print(f"worker {ref} deleted"))


@worker_admin.command("set")
@click.argument("ref")
@click.option("--description", help="Free text, as SSIS's Description.")
@click.option("--tags", help="Comma-separated tags.")
@click.option("--name", "display_name", help="Display name.")
@json_option
def worker_set(ref: str, description: str | None, tags: str | None, display_name: str | None) -> None:
    """Change a worker's description, tags or display name."""
    worker = call(
        lambda c: c.update_worker(ref, description=description, tags=tags, display_name=display_name)
    )
    state().emit(worker, lambda out: _workers_table(out, [worker]))


@manager_group.command("audit")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option(
    "--action",
    "actions",
    multiple=True,
    metavar="ACTION",
    help="Only these actions, or action families: --action certificate (certificate.add, .revoke...), "
    "--action store.change. Repeatable.",
)
@json_option
def audit(limit: int, actions: tuple[str, ...]) -> None:
    """Show the audit log: every certificate, binding, worker and role change, newest last."""
    if actions:
        # The route pages by id only; filter the newest 10000 rows here and keep the last --limit.
        everything = call(lambda c: c.audit(limit=10000, newest=True))
        rows = [r for r in everything if _action_matches(r.action, actions)][-limit:]
    else:
        rows = call(lambda c: c.audit(limit=limit, newest=True))

    def human(out: Console) -> None:
        lines: list[list[str]] = []
        for row in rows:
            details = ", ".join(f"{k}={v}" for k, v in row.details.items())
            lines.append([short_time(row.time), row.actor, row.action, row.target, escape(details)])
        print_table(out, [Column("time", key=True), "actor", "action", "target", "details"], lines)

    state().emit(rows, human)


def _action_matches(action: str, wanted: tuple[str, ...]) -> bool:
    return any(action == w or action.startswith(w.rstrip(".") + ".") for w in wanted)
