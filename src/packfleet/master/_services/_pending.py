"""Why an execution is still pending, and how the master sees a worker that asks about itself.

An execution waits until a worker leases its task. A worker leases only when it is enabled,
online (its heartbeats arrive), allowed for the execution (``run --worker``), and its own gate is
open: a free slot (MaxTaskCount), CPU use below TaskRequestMaxCPU, free memory above
TaskRequestMinMemory. The master knows the first three; the worker states the last one, with its
figures, in each heartbeat. :meth:`PendingService.explain` puts them together, worker by worker.
"""

from __future__ import annotations

from typing import Any

from packfleet.catalog import ExecutionStatus
from packfleet.master._auth import Caller
from packfleet.master._fleet import worker_view
from packfleet.master._state import MasterState

_WAITING = {ExecutionStatus.CREATED, ExecutionStatus.PENDING}


def _label(view: dict[str, Any]) -> str:
    return f"{view.get('display_name') or '?'} ({view['agent_id']})"


class PendingService:
    """What ``run --wait`` tells the person waiting, and what ``doctor`` on a worker is told."""

    def __init__(self, state: MasterState) -> None:
        self._state = state

    async def explain(self, execution_id: int) -> dict[str, Any]:
        """``{"execution_id", "status", "pending", "reasons": [...], "ready": [...]}``.

        ``reasons`` say, per worker that could run it, why it does not; ``ready`` names workers that
        could lease the task now (it is then a matter of their next lease request).
        """
        state = self._state
        record = await state.db(state.catalog.get_execution, execution_id)
        answer: dict[str, Any] = {
            "execution_id": execution_id,
            "status": record.status.label,
            "pending": record.status in _WAITING,
            "reasons": [],
            "ready": [],
        }
        if not answer["pending"]:
            return answer
        now = state.clock()
        views = [worker_view(w, now) for w in await state.db(state.catalog.list_workers)]
        allowed = set(record.allowed_workers)
        candidates = [v for v in views if not allowed or v["agent_id"] in allowed]
        reasons: list[str] = []
        for agent_id in sorted(allowed - {v["agent_id"] for v in views}):
            reasons.append(f"chosen worker {agent_id} is not known to the master (deleted?)")
        if not candidates and not allowed:
            reasons.append(
                "no worker is registered with the master; fix: packfleet manager token create --enable, "
                "then packfleet worker join TOKEN on a worker"
            )
        usable = 0
        for view in candidates:
            who = ("chosen worker " if allowed else "worker ") + _label(view)
            if not view.get("is_enabled"):
                reasons.append(f"{who} is disabled; fix: packfleet manager worker enable {view['agent_id']}")
            elif view["state"] != "online":
                seen = view.get("offline_seconds")
                ago = "" if seen is None else f", last heartbeat {int(seen // 60)} min ago"
                reasons.append(f"{who} is {view['state']}{ago}; fix: start it (packfleet worker run)")
            elif gate := str((view.get("machine_info") or {}).get("lease_gate") or ""):
                usable += 1
                reasons.append(f"{who} asks for no tasks: {gate}")
            else:
                usable += 1
                answer["ready"].append(_label(view))
        if candidates and usable == 0:
            scope = "of the chosen workers" if allowed else "worker"
            reasons.insert(0, f"no enabled online {scope} can take it")
        answer["reasons"] = reasons
        return answer

    async def worker_self(self, caller: Caller) -> dict[str, Any]:
        """The master's view of the worker whose certificate calls: what ``doctor`` on a worker shows.

        Read-only (a heartbeat would register an unknown certificate): ``known`` false while the
        certificate is trusted but bound to no worker yet, else the worker's ``state`` as ``manager
        worker list`` shows it, ``is_enabled`` and this certificate's own status.
        """
        state, thumbprint, principal = self._state, caller.thumbprint, caller.principal
        if principal is None or principal.agent_id is None:
            return {"known": False, "thumbprint": thumbprint}
        worker = await state.db(state.catalog.get_worker, principal.agent_id)
        view = worker_view(worker, state.clock())
        return {
            "known": True,
            "thumbprint": thumbprint,
            "certificate_status": principal.cert_status,
            "agent_id": view["agent_id"],
            "display_name": view["display_name"],
            "is_enabled": view["is_enabled"],
            "state": view["state"],
            "offline_seconds": view["offline_seconds"],
        }
