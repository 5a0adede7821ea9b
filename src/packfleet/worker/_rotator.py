"""``packfleet worker rotate-cert`` as a library: the seed's "change the worker certificate", steps 1-6.

The steps themselves are :mod:`packfleet.worker._renewal`'s; this class sequences them for a command
that runs beside ``worker run``, as :class:`packfleet.manager.MasterCertRotator` does for the master
certificate, and reports its progress through ``note``:

1. register the next certificate with the master over the current one (or resume a rotation whose
   new certificate is already in use and whose old one is still to be retired);
2. tell the running agent (SIGHUP) to switch; it retires the old certificate itself once its new
   connections work, and this waits up to ``timeout`` seconds to see it done;
3. with no agent running, retire the old certificate here.

>>> rotation = WorkerCertRotator(home, note=print, timeout=30)      # doctest: +SKIP
>>> result = await rotation.run()                                    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packfleet.worker._identity import load_identity
from packfleet.worker._renewal import read_pending, register_next_certificate, retire_previous, signal_agent

#: How often the rotation looks whether the running agent has switched (seconds).
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class WorkerRotationResult:
    """What a worker certificate rotation did."""

    #: The certificate given up, and the one now in use.
    old: str
    new: str
    #: The running ``worker run`` told to switch, or None when none runs (retired here).
    agent_pid: int | None
    #: Whether the old certificate is retired on the master and deleted here; False when the agent
    #: did not get to it within the timeout (it does at its next heartbeat).
    retired: bool
    #: The new certificate was registered by an earlier, interrupted run.
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON ``worker rotate-cert --json`` prints."""
        return {"old": self.old, "new": self.new, "agent_pid": self.agent_pid, "retired": self.retired}


class WorkerCertRotator:
    """Rotate the certificate of the worker of ``home`` without stopping it.

    ``run`` registers the next certificate with the master (which trusts it and binds it to this
    AgentId), sets WorkerHttpsCertThumbprint, tells the running agent to switch and waits up to
    ``timeout`` seconds for the old certificate to be retired on both sides. An expired certificate
    cannot be rotated (the master refuses it in the handshake): the worker must be admitted again.
    """

    def __init__(
        self, home: Path, *, note: Callable[[str], None], timeout: float, poll: float = POLL_SECONDS
    ) -> None:
        self.home = home
        self.note = note
        self.timeout = timeout
        self.poll = poll

    async def run(self) -> WorkerRotationResult:
        home = self.home
        identity = load_identity(home)
        pending = read_pending(home)
        resumed = pending is not None and pending.new == identity.certificate.thumbprint
        if pending is not None and resumed:
            self.note(f"resuming: {pending.new} is in use, {pending.retire} still has to be retired")
            old, new = pending.retire, pending.new
        else:
            client = identity.connect()
            try:
                cred = await register_next_certificate(home, identity, client)
            finally:
                await client.close()
            old, new = identity.certificate.thumbprint, cred.thumbprint
            self.note(f"the master trusts the new certificate {new}")
        pid = signal_agent(home)
        if pid is None:
            await self.retire_here()
            return WorkerRotationResult(old, new, agent_pid=None, retired=True, resumed=resumed)
        self.note(f"told the running worker (pid {pid}) to switch to {new}")
        deadline = time.monotonic() + self.timeout
        while read_pending(home) is not None and time.monotonic() < deadline:
            await asyncio.sleep(self.poll)
        return WorkerRotationResult(
            old, new, agent_pid=pid, retired=read_pending(home) is None, resumed=resumed
        )

    async def retire_here(self) -> str | None:
        """Retire the old certificate with the new identity (no agent runs to do it); its thumbprint."""
        identity = load_identity(self.home)
        client = identity.connect()
        try:
            return await retire_previous(self.home, identity, client)
        finally:
            await client.close()
