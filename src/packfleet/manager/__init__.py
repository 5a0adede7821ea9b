"""The manager's client library: SSIS Manager's operations over the master's admin routes.

>>> async with ManagerClient.from_home(home) as manager:     # doctest: +SKIP
...     [worker["agent_id"] for worker in await manager.list_workers()]
"""

from packfleet.manager._client import ManagerClient, RemoteOptions

__all__ = ["ManagerClient", "RemoteOptions"]
