"""How the console words things: worker states, durations, ages, days left."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from packfleet.catalog import WorkerRecord
from packfleet.expiry import days_left, expiry_warning
from packfleet.protocol import ONLINE_WINDOW as ONLINE_WINDOW  # the pages name the window
from packfleet.protocol import liveness


def duration(seconds: float | None) -> str:
    """``3 s``, ``4 min 5 s``, ``2 h 3 min``, ``1 d 4 h``; empty for None."""
    if seconds is None:
        return ""
    whole = int(max(seconds, 0))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    if seconds < 10 and seconds != whole:
        return f"{seconds:.1f} s"
    return f"{secs} s"


def when(moment: datetime | None) -> str:
    """A time as people read it in the console: UTC, to the second."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else ""


def ago(moment: datetime | None, now: datetime) -> str:
    return "never" if moment is None else f"{duration((now - moment).total_seconds())} ago"


@dataclass(frozen=True)
class WorkerView:
    """One worker row: the record plus what the console says about it."""

    record: WorkerRecord
    online: bool
    state: str
    explanation: str
    heartbeat: str
    running: int
    max_tasks: int | None
    cpu: float | None
    memory_mb: float | None
    version: str
    thumbprint: str
    cert_days: float | None
    cert_warning: str | None

    @property
    def name(self) -> str:
        return self.record.display_name or self.record.machine_name or self.record.agent_id


def worker_view(worker: WorkerRecord, now: datetime) -> WorkerView:
    info: dict[str, Any] = dict(worker.machine_info)
    seen = worker.last_online_time
    # The master's one verdict: a revoked or expired worker is not online, whatever its heartbeat.
    online = liveness(seen, [(c.status, c.not_after) for c in worker.certificates], now) == "online"
    enabled = "enabled" if worker.is_enabled else "disabled"
    state = f"{'online' if online else 'offline'}, {enabled}"
    if online and worker.is_enabled:
        explanation = "sends heartbeats and takes tasks"
    elif online:
        explanation = "sends heartbeats but takes no task until an operator enables it"
    elif worker.is_enabled:
        explanation = (
            "no heartbeat for over 3 minutes: its running tasks go to other workers when their lease runs out"
            if seen is not None
            else "has never sent a heartbeat"
        )
    else:
        explanation = "no recent heartbeat, and takes no task until enabled"
    active = [c for c in worker.certificates if c.status == "active"]
    cert = max(active, key=lambda c: c.not_after or now, default=None)
    days = days_left(cert.not_after, now) if cert is not None and cert.not_after is not None else None
    max_tasks = info.get("max_tasks")
    return WorkerView(
        record=worker,
        online=online,
        state=state,
        explanation=explanation,
        heartbeat=ago(seen, now),
        running=int(info.get("running_tasks") or 0),
        max_tasks=int(max_tasks) if isinstance(max_tasks, int | float) else None,
        cpu=float(info["cpu_percent"]) if "cpu_percent" in info else None,
        memory_mb=float(info["memory_free_mb"]) if "memory_free_mb" in info else None,
        version=str(info.get("version") or ""),
        thumbprint=cert.thumbprint if cert is not None else "",
        cert_days=days,
        cert_warning=expiry_warning(days),
    )


def page_numbers(page: int, has_next: bool) -> dict[str, int | None]:
    return {"page": page, "prev": page - 1 if page > 1 else None, "next": page + 1 if has_next else None}
