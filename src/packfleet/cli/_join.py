"""``packfleet worker join TOKEN`` and ``packfleet manager worker connect``: admit a worker in one step."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from packfleet.cli._client import call, state
from packfleet.cli._manager import worker_admin
from packfleet.cli._output import json_option
from packfleet.cli._tokens import parse_duration, print_token
from packfleet.cli._worker import worker_group
from packfleet.errors import UsageError
from packfleet.pki import KEY_TYPES, load_credential
from packfleet.thumbprint import is_thumbprint, normalize_thumbprint

if TYPE_CHECKING:
    from packfleet.provision import WorkerJoin


@worker_group.command("join")
@click.argument("token")
@click.option("--name", metavar="NAME", help="Display name and first CN. Default: the machine name.")
@click.option("--ip", metavar="IP", help="The worker's address, the second CN. Default: its first IP.")
@click.option("--key", "key_type", type=click.Choice(KEY_TYPES), default="ecdsa-p256", show_default=True)
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@json_option
def worker_join(token: str, name: str | None, ip: str | None, key_type: str, days: int) -> None:
    """Join the master named by TOKEN (from `packfleet manager token create` on the master).

    Checks that the master presents the certificate the token pins before sending anything, makes
    the worker certificate if this home has no usable one, proves it holds its key, and leaves the
    master certificate trusted and pinned in WorkerSettings.config. Running it again with the same
    token after a lost answer is safe.

    \b
    packfleet --home /srv/w worker join pfjoin1.3f9c0a1b2d4e.… --name worker1 --ip 10.0.0.7
    packfleet --home /srv/w worker run
    """
    # Imported here: set-up pulls in layers that `packfleet --help` need not load.
    from packfleet.provision import join_worker
    from packfleet.worker import signal_agent

    st = state()
    home = st.home()
    result = join_worker(home, token, name=name, ip=ip, key_type=key_type, days=days)
    for warning in result.warnings:
        st.note(f"[yellow]warning:[/] {warning}")
    # A worker refused for a revoked or expired certificate keeps running and retrying: hand it the
    # new certificate and pins now (SIGHUP reloads them), so it is back without a restart.
    pid = signal_agent(home)
    if pid is not None:
        st.note(f"told the running worker (pid {pid}) to reload its certificate and settings")
    st.emit(result.to_dict() | {"reloaded_agent_pid": pid}, lambda out: _print_join(out, result))


def _print_join(out: Console, result: WorkerJoin) -> None:
    out.print(
        result.message + (" (a repeat of a join that had already succeeded)" if result.repeated else "")
    )
    made = "new" if result.created_certificate else "existing"
    out.print(f"worker certificate  {result.thumbprint} ({made})")
    out.print(f"agent id            {result.agent_id}")
    out.print(f"master              {result.master_endpoint} (pinned {result.master_thumbprint})")
    out.print("next                packfleet worker run")


@worker_admin.command("connect")
@click.argument("ref")
@click.option(
    "--cert",
    "cert_arg",
    help="The worker's new public certificate (worker.cer from its home), or the thumbprint of one "
    "the master already holds (a worker refused with its new certificate names it).",
)
@click.option("--token", "as_token", is_flag=True, help="Print a one-use join token bound to this worker.")
@click.option(
    "--ttl", default="1h", callback=parse_duration, show_default=True, help="Lifetime of the --token."
)
@json_option
def worker_connect(ref: str, cert_arg: str | None, as_token: bool, ttl: timedelta) -> None:
    """Connect an existing worker anew: SSIS Manager's "delete the worker and add it again", in one step.

    With --cert, the certificate replaces the worker's certificates at once: the old ones leave the
    master's Root store and their connections close; the worker keeps its AgentId and enabled state.
    With --token, a one-use join token bound to the worker is printed; `packfleet worker join TOKEN`
    on the worker then does the same. That is how a worker whose certificate expired comes back.

    \b
    packfleet manager worker connect worker1 --cert /srv/w/worker.cer
    packfleet manager worker connect worker1 --cert 0123456789ABCDEF0123456789ABCDEF01234567
    packfleet manager worker connect worker1 --token
    """
    if (cert_arg is None) == (not as_token):
        raise UsageError(
            "give either --cert FILE (the worker's new certificate) or --token (a join token for it)",
            fix=f"packfleet manager worker connect {ref} --token",
        )
    st = state()
    if cert_arg is not None:
        if is_thumbprint(cert_arg) and not Path(cert_arg).exists():
            thumbprint = normalize_thumbprint(cert_arg)
            result = call(lambda c: c.connect_worker(ref, thumbprint=thumbprint))
        else:
            if not Path(cert_arg).is_file():
                raise UsageError(
                    f"--cert {cert_arg!r} is neither a certificate file nor a thumbprint (40 hex digits)",
                    fix=f"packfleet manager worker connect {ref} --cert worker.cer",
                )
            pem = load_credential(Path(cert_arg)).cert_pem().decode()
            result = call(lambda c: c.connect_worker(ref, pem))
        retired = ", ".join(result.retired) or "none"
        st.emit(
            result,
            lambda out: out.print(
                f"worker {result.agent_id} ({result.display_name}) now has certificate "
                f"{result.thumbprint}; retired: {retired}; "
                + ("enabled" if result.enabled else "still disabled")
            ),
        )
        return
    created = call(lambda c: c.create_token(ttl_seconds=ttl.total_seconds(), uses=1, worker=ref))
    st.emit(created, lambda out: print_token(out, created, agent=created.agent_id))
