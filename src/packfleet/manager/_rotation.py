"""The manager's side of a master certificate rotation: drive the master's steps, follow the workers,
and move this manager's own pins along (the seed's "change the master certificate", steps 1-5).

>>> rotation = MasterCertRotator(home, note=print, timeout=120)     # doctest: +SKIP
>>> result = await rotation.run(cns=[], days=None, force=False)      # doctest: +SKIP
>>> await rotation.close()                                           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packfleet.config import load_manager_settings, load_master_settings, set_setting, settings_path
from packfleet.errors import CertificateNotFound
from packfleet.manager._client import ManagerClient
from packfleet.pki import CertStore, Credential, load_credential_bytes
from packfleet.protocol import RotationStatus, RotationWorker

#: The shortest time between two questions about the rotation's progress (seconds): what an older
#: master, which answers a long-poll at once, is asked at most.
POLL_SECONDS = 0.5
#: How long the master may hold one progress question (a long-poll) while workers catch up: a
#: person watching sees a line at least this often.
LONG_POLL_SECONDS = 5.0


Step = Literal["confirmed", "promoted"]


def worker_label(row: RotationWorker) -> str:
    return f"{row.display_name or '?'} ({row.agent_id})"


def awaited_workers(status: RotationStatus, step: Step) -> list[RotationWorker]:
    """Online workers that have not reached ``step`` yet; the master judges ``online``."""
    return [row for row in status.workers if row.online and not getattr(row, step)]


@dataclass(frozen=True)
class RotationResult:
    """What a whole rotation did: the master's answer to ``finish``, the workers as last seen, and
    those that did not take part (each needs the manual steps, ``finished.manual_steps``)."""

    finished: RotationStatus
    #: The master's last status before ``finish``: the workers as last seen.
    last: RotationStatus

    @property
    def workers(self) -> list[RotationWorker]:
        return self.last.workers

    @property
    def behind(self) -> list[RotationWorker]:
        return [row for row in self.last.workers if not row.promoted]

    def to_dict(self) -> dict[str, Any]:
        """The JSON ``manager rotate master-cert --json`` prints: worker rows as the master sent them."""
        rows = self.last.wire().get("workers", [])
        return self.finished.wire() | {"workers": rows, "behind": [r for r in rows if not r.get("promoted")]}


class RotationProgress:
    """One line to ``note`` each time a worker reaches the next step, so a person watches it happen."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.note = note
        self._seen: set[tuple[str, str]] = set()
        self._awaited: dict[str, tuple[str, ...]] = {}
        self._offline_shown = False
        self._started = time.monotonic()

    def elapsed(self) -> str:
        return f"[{time.monotonic() - self._started:5.1f} s]"

    def show(self, status: RotationStatus, key: Step | None = None) -> None:
        for row in status.workers:
            for step, words in (("confirmed", "accepts"), ("promoted", "now pins only")):
                if getattr(row, step) and (row.agent_id, step) not in self._seen:
                    self._seen.add((row.agent_id, step))
                    self.note(f"{self.elapsed()} {worker_label(row)} {words} {status.new}")
        if key is not None:
            awaited = tuple(worker_label(r) for r in awaited_workers(status, key))
            if awaited and awaited != self._awaited.get(key):
                self.note(f"{self.elapsed()} still awaited ({key}): {', '.join(awaited)}")
            self._awaited[key] = awaited
        offline = [r for r in status.workers if not r.online]
        if offline and not self._offline_shown:
            self._offline_shown = True
            self.note(
                f"{self.elapsed()} offline, not waited for ({len(offline)}): "
                + ", ".join(worker_label(r) for r in offline)
                + "; unless they come back during the rotation, each needs: "
                + "; ".join(status.manual_steps)
            )

    def step(self, text: str) -> None:
        self.note(f"{self.elapsed()} {text}")


class MasterCertRotator:
    """Rotate the master certificate from one manager home (its ManagerSettings.config and stores).

    ``run`` starts (or resumes) the rotation, waits up to ``timeout`` seconds at each step for the
    online workers, switches, follows the workers' promotion and retires the old certificate; this
    manager trusts the new certificate first and pins it once the master serves it, so it never
    loses its own connection. ``abort`` gives up a rotation that has not switched.
    """

    def __init__(self, home: Path, *, note: Callable[[str], None], timeout: float) -> None:
        self.home = home
        self.progress = RotationProgress(note)
        self.timeout = timeout
        self.client = ManagerClient.from_home(home)

    async def __aenter__(self) -> MasterCertRotator:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.close()

    async def _reconnect(self) -> None:
        """Pick up the manager's new pins: the next connection trusts what the settings now name."""
        await self.client.close()
        self.client = ManagerClient.from_home(self.home)

    async def _trust_next(self, pem: str, thumbprint: str) -> None:
        await asyncio.to_thread(self._trust_next_files, pem, thumbprint)

    def _trust_next_files(self, pem: str, thumbprint: str) -> None:
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

    async def _wait(self, key: Step) -> RotationStatus:
        deadline = time.monotonic() + self.timeout
        while True:
            asked = time.monotonic()
            wait = min(LONG_POLL_SECONDS, max(0.0, deadline - asked))
            status = await self.client.master_cert_rotation(wait_for=key, wait=wait)
            self.progress.show(status, key)
            if not awaited_workers(status, key) or time.monotonic() >= deadline:
                return status
            # The master answers as soon as the workers got there; one that answered at once anyway
            # (an older master, or news of a worker) is not asked again in a tight loop.
            await asyncio.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - asked)))

    async def run(self, *, cns: list[str], days: int | None, force: bool) -> RotationResult:
        """The whole rotation, started or resumed (after an interruption, or a master restart)."""
        started = await self.client.rotate_master_cert("start", cns=cns, days=days)
        old, new = started.old or "", started.new or ""
        self.progress.step(
            f"{'resuming' if started.resumed else 'started'} the rotation of the master certificate "
            f"{old} -> {new} ({started.phase}); announced to the workers through their open connections"
        )
        await self._trust_next(started.new_cert_pem, new)
        await self._reconnect()
        if started.phase == "announced":
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
        return RotationResult(finished, promoted)

    async def abort(self) -> RotationStatus:
        """Give up a rotation that has not switched; this manager forgets the next pin."""
        result = await self.client.rotate_master_cert("abort")
        settings = load_manager_settings(self.home)
        if result.aborted and settings.next_master_https_cert_thumbprint == result.aborted:
            set_setting(self.home, "manager", "NextMasterHttpsCertThumbprint", "")
        return result
