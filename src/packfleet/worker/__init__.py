"""The Scale Out Worker: leases tasks from the master, runs their packages, reports every event.

A worker is its home (WorkerSettings.config, the My and Root stores) and one asyncio agent::

    agent = WorkerAgent(home)              # settings, certificates and pins checked here
    async with agent:
        await agent.run(burst=True)        # heartbeat, lease, run, report until no work is left

or ``await run_worker(home)`` to serve until SIGTERM (SIGHUP reloads settings and certificates).
Nothing here imports the master: the two share only :mod:`packfleet.protocol`.
"""

from packfleet.worker._agent import WorkerAgent, run_worker
from packfleet.worker._identity import WorkerIdentity, certificate_names, host_matches, load_identity
from packfleet.worker._logcache import LogCache
from packfleet.worker._machine import MachineProbe, PsutilProbe
from packfleet.worker._renewal import (
    Pending,
    read_pending,
    readmit_fix,
    register_next_certificate,
    renewal_due,
    retire_previous,
    running_agent,
    signal_agent,
)
from packfleet.worker._rotator import WorkerCertRotator, WorkerRotationResult
from packfleet.worker._service import SERVICE_NAME, enable_hint, render_unit
from packfleet.worker._timing import AgentTiming

__all__ = [
    "SERVICE_NAME",
    "AgentTiming",
    "LogCache",
    "MachineProbe",
    "Pending",
    "PsutilProbe",
    "WorkerAgent",
    "WorkerCertRotator",
    "WorkerIdentity",
    "WorkerRotationResult",
    "certificate_names",
    "enable_hint",
    "host_matches",
    "load_identity",
    "read_pending",
    "readmit_fix",
    "register_next_certificate",
    "render_unit",
    "renewal_due",
    "retire_previous",
    "run_worker",
    "running_agent",
    "signal_agent",
]
