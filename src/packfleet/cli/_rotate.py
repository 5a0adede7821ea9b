"""Certificate rotation and revocation commands, without downtime.

``packfleet manager rotate master-cert`` runs the seed's "change the master certificate" (steps 1-5)
through the master's admin API: announce, wait for every worker, switch, retire. ``packfleet worker
rotate-cert`` runs "change the worker certificate" (steps 1-6) on a worker. ``packfleet manager
worker revoke-cert`` refuses a certificate for good and cuts its open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from packfleet.cli._client import call, state
from packfleet.cli._manager import manager_group, worker_admin
from packfleet.cli._output import json_option, print_table
from packfleet.cli._worker import worker_group
from packfleet.config import load_manager_settings, load_master_settings, set_setting, settings_path
from packfleet.errors import CertificateNotFound
from packfleet.manager import ManagerClient
from packfleet.pki import CertStore, Credential, load_credential_bytes

#: How often the rotation's progress is asked for while waiting on workers.
_POLL = 0.5


@manager_group.group("rotate")
def rotate_group() -> None:
    """Rotate certificates without stopping anything."""


def _label(row: dict[str, Any]) -> str:
    return f"{row.get('display_name') or '?'} ({row['agent_id']})"


def _waiting(status: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Online workers that have not reached ``key`` (confirmed / promoted) yet."""
    return [row for row in status.get("workers", []) if row.get("online") and not row.get(key)]


class _Progress:
    """Print a line each time a worker reaches the next step, so a person watches it happen."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.note = note
        self._seen: set[tuple[str, str]] = set()
        self._awaited: dict[str, tuple[str, ...]] = {}
        self._offline_shown = False
        self._started = time.monotonic()

    def elapsed(self) -> str:
        return f"[{time.monotonic() - self._started:5.1f} s]"

    def show(self, status: dict[str, Any], key: str | None = None) -> None:
        for row in status.get("workers", []):
            for step, words in (("confirmed", "accepts"), ("promoted", "now pins only")):
                if row.get(step) and (row["agent_id"], step) not in self._seen:
                    self._seen.add((row["agent_id"], step))
                    self.note(f"{self.elapsed()} {_label(row)} {words} {status.get('new')}")
        if key is not None:
            awaited = tuple(_label(r) for r in _waiting(status, key))
            if awaited and awaited != self._awaited.get(key):
                self.note(f"{self.elapsed()} still awaited ({key}): {', '.join(awaited)}")
            self._awaited[key] = awaited
        offline = [r for r in status.get("workers", []) if not r.get("online")]
        if offline and not self._offline_shown:
            self._offline_shown = True
            self.note(
                f"{self.elapsed()} offline, not waited for ({len(offline)}): "
                + ", ".join(_label(r) for r in offline)
                + "; unless they come back during the rotation, each needs: "
                + "; ".join(status.get("manual_steps") or [])
            )

    def step(self, text: str) -> None:
        self.note(f"{self.elapsed()} {text}")


class _MasterRotation:
    """The manager side of a master certificate rotation, over one home's ManagerSettings.config."""

    def __init__(self, home: Path, progress: _Progress, timeout: float) -> None:
        self.home = home
        self.progress = progress
        self.timeout = timeout
        self.client = ManagerClient.from_home(home)

    async def _reconnect(self) -> None:
        """Pick up the manager's new pins: the next connection trusts what the settings now name."""
        await self.client.close()
        self.client = ManagerClient.from_home(self.home)

    async def close(self) -> None:
        await self.client.close()

    def _trust_next(self, pem: str, thumbprint: str) -> None:
        """Seed step 5.1 for the manager itself: the new certificate into Root, pinned as next."""
        root = CertStore(self.home, "Root")
        if not root.contains(thumbprint):
            root.add(Credential(load_credential_bytes(pem.encode(), source="the master").certificate))
        if load_manager_settings(self.home).master_https_cert_thumbprint != thumbprint:
            set_setting(self.home, "manager", "NextMasterHttpsCertThumbprint", thumbprint)

    def _serves(self, thumbprint: str) -> bool:
        """Whether a master of this home still serves ``thumbprint`` (it was down during the rotation).

        Its certificate is not the manager's to delete: that master retires it itself once it
        starts and catches up with the rotation from the catalog, which it could not do without it.
        """
        if not settings_path(self.home, "master").exists():
            return False
        return load_master_settings(self.home).ssl_cert_thumbprint == thumbprint

    def _promote(self, new: str) -> None:
        set_setting(self.home, "manager", "MasterHttpsCertThumbprint", new)
        set_setting(self.home, "manager", "NextMasterHttpsCertThumbprint", "")

    async def _wait(self, key: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            status = await self.client.master_cert_rotation()
            self.progress.show(status, key)
            if not _waiting(status, key) or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(_POLL)

    async def run(self, cns: list[str], days: int | None, force: bool) -> dict[str, Any]:
        started = await self.client.rotate_master_cert("start", cns=cns, days=days)
        old, new = started["old"], started["new"]
        self.progress.step(
            f"{'resuming' if started.get('resumed') else 'started'} the rotation of the master certificate "
            f"{old} -> {new} ({started['phase']}); announced to the workers through their open connections"
        )
        self._trust_next(started["new_cert_pem"], new)
        await self._reconnect()
        if started["phase"] == "announced":
            await self._wait("confirmed")
            await self.client.rotate_master_cert("switch", force=force)
            self.progress.step(f"the master now serves {new}")
        self._promote(new)
        await self._reconnect()
        promoted = await self._wait("promoted")
        finished = await self.client.rotate_master_cert("finish")
        self.progress.step(f"{old} retired from the master's Root store")
        with contextlib.suppress(CertificateNotFound):
            if load_manager_settings(self.home).master_https_cert_thumbprint != old and not self._serves(old):
                CertStore(self.home, "Root").delete(old)
        behind = [row for row in promoted["workers"] if not row.get("promoted")]
        return finished | {"workers": promoted["workers"], "behind": behind}

    async def abort(self) -> dict[str, Any]:
        result = await self.client.rotate_master_cert("abort")
        settings = load_manager_settings(self.home)
        if settings.next_master_https_cert_thumbprint == result.get("aborted"):
            set_setting(self.home, "manager", "NextMasterHttpsCertThumbprint", "")
        return result


def _print_rotation(out: Console, result: dict[str, Any]) -> None:
    if result.get("phase") == "aborted":
        out.print(f"rotation to {result['aborted']} aborted; the master keeps serving {result['serving']}")
        return
    out.print(f"the master serves {result['new']}; {result['old']} is retired")
    rows: list[list[str]] = []
    for row in result.get("workers", []):
        done = "[green]rotated[/]" if row.get("promoted") else "[yellow]needs the manual steps[/]"
        rows.append(
            [
                _label(row),
                "yes" if row.get("online") else "no",
                "yes" if row.get("enabled") else "no",
                ", ".join(row.get("accepts") or []) or "-",
                done,
            ]
        )
    print_table(out, ["worker", "online", "enabled", "accepts", "status"], rows)
    behind = result.get("behind") or []
    if behind:
        out.print(f"{len(behind)} worker(s) did not take part; on each of them (seed steps 5.1-5.3):")
        for step in result.get("manual_steps") or []:
            out.print(f"  {step}")


@rotate_group.command("master-cert")
@click.option(
    "--cn",
    "cns",
    multiple=True,
    metavar="NAME",
    help="Names of the new certificate. Default: those of the current one.",
)
@click.option("--days", type=click.IntRange(1, 3650), help="Validity. Default: the current certificate's.")
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for the workers at each step.",
)
@click.option(
    "--force", is_flag=True, help="Switch even if online workers have not accepted the new certificate."
)
@click.option("--abort", is_flag=True, help="Give up a rotation that has not switched yet.")
@json_option
def rotate_master_cert(
    cns: tuple[str, ...], days: int | None, timeout: float, force: bool, abort: bool
) -> None:
    """Replace the master certificate without stopping the master or any worker.

    The master makes the new certificate and announces it to every worker through their heartbeat;
    each worker trusts it beside the current one. When all online workers have said so, the master
    switches its binding and SSLCertThumbprint and serves the new certificate (no restart); the
    workers pin it and drop the old one, then the master retires the old one from its Root store.
    Workers that were offline are listed with the steps they still need. Run it again to resume a
    rotation (even after a master restart); --abort gives up one that has not switched.

    \b
    packfleet manager rotate master-cert
    packfleet manager rotate master-cert --cn master.example.com --cn 10.0.0.5 --days 730
    """
    st = state()

    async def run() -> dict[str, Any]:
        rotation = _MasterRotation(st.home(), _Progress(st.note), timeout)
        try:
            if abort:
                return await rotation.abort()
            return await rotation.run(list(cns), days, force)
        finally:
            await rotation.close()

    result = asyncio.run(run())
    st.emit(result, lambda out: _print_rotation(out, result))


@worker_admin.command("revoke-cert")
@click.argument("thumbprint")
@json_option
def worker_revoke_cert(thumbprint: str) -> None:
    """Revoke a worker certificate for good: refused from the next request, open connections closed.

    \b
    packfleet manager worker revoke-cert 3F2A...
    """
    record = call(lambda c: c.revoke_certificate(thumbprint))
    state().emit(
        record,
        lambda out: out.print(
            f"certificate {record['thumbprint']} revoked (worker {record.get('agent_id') or '-'}); "
            "its open connections are closed"
        ),
    )


@worker_group.command("rotate-cert")
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for the running agent to switch.",
)
@json_option
def worker_rotate_cert(timeout: float) -> None:
    """Replace this worker's certificate without stopping it.

    Makes a new certificate with the same names, registers it with the master over the current one
    (the master trusts it and binds it to this AgentId), sets WorkerHttpsCertThumbprint, tells the
    running `worker run` (SIGHUP, by <home>/worker.pid) to switch, and retires the old certificate
    on both sides. An expired certificate cannot be rotated: the worker must be admitted again.

    \b
    packfleet worker rotate-cert
    """
    from packfleet.worker import (
        load_identity,
        read_pending,
        register_next_certificate,
        retire_previous,
        signal_agent,
    )

    st = state()
    home = st.home()

    async def retire_here() -> str | None:
        identity = load_identity(home)
        client = identity.connect()
        try:
            return await retire_previous(home, identity, client)
        finally:
            await client.close()

    async def run() -> dict[str, Any]:
        identity = load_identity(home)
        pending = read_pending(home)
        if pending is not None and pending.new == identity.certificate.thumbprint:
            st.note(f"resuming: {pending.new} is in use, {pending.retire} still has to be retired")
            old, new = pending.retire, pending.new
        else:
            client = identity.connect()
            try:
                cred = await register_next_certificate(home, identity, client)
            finally:
                await client.close()
            old, new = identity.certificate.thumbprint, cred.thumbprint
            st.note(f"the master trusts the new certificate {new}")
        pid = signal_agent(home)
        if pid is None:
            await retire_here()
            return {"old": old, "new": new, "agent_pid": None, "retired": True}
        st.note(f"told the running worker (pid {pid}) to switch to {new}")
        deadline = time.monotonic() + timeout
        while read_pending(home) is not None and time.monotonic() < deadline:
            await asyncio.sleep(_POLL)
        return {"old": old, "new": new, "agent_pid": pid, "retired": read_pending(home) is None}

    result = asyncio.run(run())

    def human(out: Console) -> None:
        out.print(f"worker certificate {result['new']} in use (worker.cer exported)")
        if result["retired"]:
            out.print(f"old certificate {result['old']} retired on the master and deleted here")
        else:
            out.print(
                f"old certificate {result['old']} not retired yet: the worker retires it at its next "
                "heartbeat (or run this command again)"
            )

    st.emit(result, human)
