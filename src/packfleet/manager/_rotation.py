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
from pathlib import Path
from typing import Any

from packfleet.config import load_manager_settings, set_setting
from packfleet.errors import CertificateNotFound
from packfleet.manager._client import ManagerClient
from packfleet.pki import CertStore, Credential, load_credential_bytes

#: How often the rotation's progress is asked for while waiting on workers (seconds).
POLL_SECONDS = 0.5


def worker_label(row: dict[str, Any]) -> str:
    return f"{row.get('display_name') or '?'} ({row['agent_id']})"


def awaited_workers(status: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Online workers that have not reached ``key`` (``confirmed`` / ``promoted``) yet; the master
    judges ``online``."""
    return [row for row in status.get("workers", []) if row.get("online") and not row.get(key)]


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

    def show(self, status: dict[str, Any], key: str | None = None) -> None:
        for row in status.get("workers", []):
            for step, words in (("confirmed", "accepts"), ("promoted", "now pins only")):
                if row.get(step) and (row["agent_id"], step) not in self._seen:
                    self._seen.add((row["agent_id"], step))
                    self.note(f"{self.elapsed()} {worker_label(row)} {words} {status.get('new')}")
        if key is not None:
            awaited = tuple(worker_label(r) for r in awaited_workers(status, key))
            if awaited and awaited != self._awaited.get(key):
                self.note(f"{self.elapsed()} still awaited ({key}): {', '.join(awaited)}")
            self._awaited[key] = awaited
        offline = [r for r in status.get("workers", []) if not r.get("online")]
        if offline and not self._offline_shown:
            self._offline_shown = True
            self.note(
                f"{self.elapsed()} offline, not waited for ({len(offline)}): "
                + ", ".join(worker_label(r) for r in offline)
                + "; unless they come back during the rotation, each needs: "
                + "; ".join(status.get("manual_steps") or [])
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

    def _promote(self, new: str) -> None:
        set_setting(self.home, "manager", "MasterHttpsCertThumbprint", new)
        set_setting(self.home, "manager", "NextMasterHttpsCertThumbprint", "")

    async def _wait(self, key: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            status = await self.client.master_cert_rotation()
            self.progress.show(status, key)
            if not awaited_workers(status, key) or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(POLL_SECONDS)

    async def run(self, *, cns: list[str], days: int | None, force: bool) -> dict[str, Any]:
        """The whole rotation; the answer is the master's ``finish`` with ``workers`` and ``behind``
        (the workers that did not take part and need the manual steps)."""
        started = await self.client.rotate_master_cert("start", cns=cns, days=days)
        old, new = started["old"], started["new"]
        self.progress.step(
            f"{'resuming' if started.get('resumed') else 'started'} the rotation of the master certificate "
            f"{old} -> {new} ({started['phase']}); announced to the workers through their open connections"
        )
        await self._trust_next(started["new_cert_pem"], new)
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
            if load_manager_settings(self.home).master_https_cert_thumbprint != old:
                CertStore(self.home, "Root").delete(old)
        behind = [row for row in promoted["workers"] if not row.get("promoted")]
        return finished | {"workers": promoted["workers"], "behind": behind}

    async def abort(self) -> dict[str, Any]:
        """Give up a rotation that has not switched; this manager forgets the next pin."""
        result = await self.client.rotate_master_cert("abort")
        settings = load_manager_settings(self.home)
        if settings.next_master_https_cert_thumbprint == result.get("aborted"):
            set_setting(self.home, "manager", "NextMasterHttpsCertThumbprint", "")
        return result
