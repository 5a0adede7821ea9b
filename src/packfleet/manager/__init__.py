"""The manager's client library: SSIS Manager's operations over the master's admin routes.

>>> async with ManagerClient.from_home(home) as manager:     # doctest: +SKIP
...     [worker.agent_id for worker in await manager.list_workers() if worker.online]
"""

from packfleet.manager._client import ManagerClient, RemoteOptions, answered_error
from packfleet.manager._rotation import (
    MasterCertRotator,
    RotationProgress,
    RotationResult,
    awaited_workers,
    worker_label,
)

__all__ = [
    "ManagerClient",
    "MasterCertRotator",
    "RemoteOptions",
    "RotationProgress",
    "RotationResult",
    "answered_error",
    "awaited_workers",
    "worker_label",
]
