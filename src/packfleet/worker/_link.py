"""The agent's link to the master: the HTTPS client, what the master last said, and the heartbeat loop.

Every request of every part goes through :meth:`MasterLink.post`, so one place learns what each
answer says about the link: a 403 means the master refuses this worker (state "refused"), a
transport failure that the master is away, any answer that it is back (which wakes the reporter
out of its backoff). The heartbeat's answer sets the worker's state (enabled, disabled, ...) and
the master's clock offset, through which lease expiries are read.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from packfleet.errors import ApiError, TransportError
from packfleet.protocol import HeartbeatReply, routes
from packfleet.transport import MasterClient
from packfleet.worker._attempts import MasterClock, master_clock
from packfleet.worker._identity import WorkerIdentity
from packfleet.worker._pacing import AgentEvents, Backoff, Pause

log = logging.getLogger("packfleet.worker")


class MasterLink:
    """The connection to the master and the master's last word on this worker."""

    def __init__(self, identity: WorkerIdentity, events: AgentEvents, *, describe: Callable[[], str]) -> None:
        self.client = identity.connect()
        self._retired: list[MasterClient] = []
        self._events = events
        self._describe = describe
        #: The master's last word on this worker: a WorkerState, "refused" after a 403, None before.
        self.state: str | None = None
        #: The master's clock offset, from the last heartbeat: how a lease's expiry reads here.
        self.master_clock: MasterClock | None = None
        self._away = False

    async def post(self, path: str, body: Any, *, timeout: float | None = None) -> Any:
        """POST to the master; learn from the outcome whether it refuses this worker or is away."""
        try:
            result = await self.client.request("POST", path, json_body=body, timeout=timeout)
        except ApiError as exc:
            self._reached()
            if exc.status == 403:
                self.set_state("refused", str(exc), agent_id="")
            raise
        except TransportError:
            self._away = True
            raise
        self._reached()
        return result

    async def download(self, sha256: str) -> bytes:
        """A project archive, by its SHA-256."""
        path = routes.WORKER_PROJECT.format(sha256=sha256)
        data: bytes = await self.client.request("GET", path, raw=True, timeout=300.0)
        return data

    def _reached(self) -> None:
        """The master answered: if it had been away, wake the reporter out of its backoff.

        Without this, events cached during an outage would wait for the reporter's next backoff
        step (up to a minute) although a heartbeat just showed the master is back.
        """
        if self._away:
            self._away = False
            self._events.master_back.set()

    def learn(self, reply: HeartbeatReply, *, sent: float, received: float, agent_id: str) -> None:
        """Take in a heartbeat's answer: the master's clock and this worker's state."""
        self.master_clock = master_clock(sent, received, reply.master_time) or self.master_clock
        self.set_state(reply.state, reply.message, agent_id=agent_id)
        if reply.clock_warning:
            log.warning("%s", reply.clock_warning)

    def set_state(self, state: str, message: str, *, agent_id: str) -> None:
        if state == self.state:
            return
        self.state = state
        self._events.wake_lease.set()
        name = self._describe()
        if state == "enabled":
            log.info("worker %s is enabled: asking the master for tasks", name)
        elif state == "disabled":
            log.warning(
                "worker %s is registered and waits to be enabled: packfleet manager worker enable %s",
                name,
                agent_id,
            )
        else:
            log.error("the master refuses worker %s (%s): %s", name, state, message)

    def install(self, identity: WorkerIdentity, context: ssl.SSLContext) -> None:
        """Present ``identity`` from now on: swap the TLS context in place, or a new client for a
        new MasterEndpoint (the old one closes with the agent, so requests in flight finish)."""
        if self.client.serves(identity.settings.master_endpoint):
            self.client.replace_context(
                context, pins=identity.pins, own_thumbprint=identity.certificate.thumbprint
            )
        else:
            self._retired.append(self.client)
            self.client = identity.connect()

    def trust_also(self, identity: WorkerIdentity, pem: str) -> None:
        """Present ``identity``, the one in use plus the next master certificate ``pem``: the client
        trusts it from its next handshake on and keeps its open connections."""
        if self.client.serves(identity.settings.master_endpoint):
            self.client.trust_also(pem, pins=list(identity.pins))
        else:
            self.install(identity, identity.ssl_context())

    async def close(self) -> None:
        for client in [*self._retired, self.client]:
            await client.close()


async def heartbeat_loop(
    beat: Callable[[], Awaitable[HeartbeatReply]],
    *,
    interval: Callable[[], float],
    on_failure: Callable[[TransportError], None],
    events: AgentEvents,
    pause: Pause,
) -> None:
    """Heartbeat every AgentHeartbeatInterval (or when asked); back off, within it, while failing."""
    backoff = Backoff()
    while not events.stopping.is_set():
        events.wake_heartbeat.clear()
        try:
            await beat()
            backoff.reset()
            delay = interval()
        except TransportError as exc:
            on_failure(exc)
            delay = min(backoff.next(), interval())
        await pause(delay, events.wake_heartbeat)
