"""The fleet's certificates and their expiry: ``GET /api/v1/admin/certificates`` and the daily log.

One inventory feeds ``packfleet manager certs``, the ``packfleet_certificate_days_left`` gauges and
the master's daily expiry warnings: the certificate the master serves (and any other certificate in
its Root store that has its key beside it, such as the next one of a rotation), the admin and
executor certificates, and every worker certificate the catalog knows.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from packfleet.catalog import CertificateRecord, PrincipalRecord, WorkerRecord
from packfleet.errors import PackfleetError
from packfleet.expiry import days_left, describe_expiry, expiry_warning
from packfleet.master._api import Endpoint
from packfleet.master._metrics import metrics_of
from packfleet.master._state import Call, MasterState, json_response
from packfleet.pki import CertInfo, CertStore
from packfleet.protocol import liveness, routes

log = logging.getLogger("packfleet.master")


def worker_view(worker: WorkerRecord, now: datetime) -> dict[str, Any]:
    """A worker as the admin routes show it, with the master's verdict on its state.

    ``state`` is one of ``online``, ``offline``, ``never`` (no heartbeat yet), ``revoked`` (no
    usable certificate left, at least one revoked) or ``expired`` (its certificates all expired).
    A revoked or expired worker is never ``online``, even if its last heartbeat is recent: the
    master refuses it at the next request. Judged here, once, so every client shows the same.
    """
    view = worker.to_dict()
    seen = worker.last_online_time
    verdict = liveness(seen, [(c.status, c.not_after) for c in worker.certificates], now)
    offline_seconds = None if seen is None else max(0.0, (now - seen).total_seconds())
    view["state"] = verdict
    view["online"] = verdict == "online"
    view["offline_seconds"] = None if verdict == "online" else offline_seconds
    return view


def _entry(
    role: str,
    thumbprint: str,
    not_after: Any,
    now: Any,
    **extra: Any,
) -> dict[str, Any]:
    days = days_left(not_after, now) if not_after is not None else None
    return {
        "role": role,
        "thumbprint": thumbprint,
        "not_after": not_after.isoformat() if not_after is not None else None,
        "days_left": days,
        "warning": expiry_warning(days),
        **extra,
    }


def _inventory(
    state: MasterState,
    serving: tuple[str, str] | None,
    principals: list[PrincipalRecord],
    workers: list[CertificateRecord],
) -> list[dict[str, Any]]:
    now = state.clock()
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    root = CertStore(state.home, "Root")
    if serving is not None:
        thumbprint, store = serving
        try:
            info = CertStore(state.home, store).info(thumbprint)
            entries.append(
                _entry(
                    "master",
                    thumbprint,
                    info.not_after,
                    now,
                    status="serving",
                    name=_cn(info),
                    sha256=info.sha256,
                )
            )
            seen.add(thumbprint)
        except PackfleetError as exc:
            log.warning("cannot read the served certificate %s: %s", thumbprint, exc.message)
    for info in root.list():
        if info.has_private_key and info.thumbprint not in seen:
            entries.append(
                _entry(
                    "master",
                    info.thumbprint,
                    info.not_after,
                    now,
                    status="standby",
                    name=_cn(info),
                    sha256=info.sha256,
                )
            )
            seen.add(info.thumbprint)
    for person in principals:
        if not person.thumbprint or not root.contains(person.thumbprint):
            continue
        info = root.info(person.thumbprint)
        entries.append(
            _entry(
                person.role,
                person.thumbprint,
                info.not_after,
                now,
                status="active",
                name=person.name,
                sha256=info.sha256,
            )
        )
    for cert in workers:
        entries.append(
            _entry(
                "worker",
                cert.thumbprint,
                cert.not_after,
                now,
                status=cert.status,
                worker=cert.agent_id,
                name=cert.display_name or cert.subject,
                sha256=cert.sha256,
            )
        )
    return entries


def _cn(info: CertInfo) -> str:
    return ", ".join(info.subject_cns) or info.subject


async def fleet_certificates(state: MasterState, serving: tuple[str, str] | None) -> list[dict[str, Any]]:
    """Every fleet certificate with ``days_left`` and ``warning`` (None, "30d", "7d", "expired")."""
    principals = await state.db(state.catalog.list_principals)
    workers = await state.db(state.catalog.certificates)
    # The stores are files: read them off the catalog's one thread.
    return await asyncio.to_thread(_inventory, state, serving, principals, workers)


async def list_certificates(call: Call) -> web.StreamResponse:
    metrics = metrics_of(call.request.app)
    entries = await fleet_certificates(call.state, metrics.serving if metrics else None)
    return json_response(entries)


async def log_expiring(state: MasterState, serving: tuple[str, str] | None) -> int:
    """Log a warning per certificate within 30 days of expiry (revoked and retired ones aside)."""
    entries = await fleet_certificates(state, serving)
    count = 0
    for entry in entries:
        if entry["warning"] is None or entry.get("status") in ("revoked", "retired"):
            continue
        count += 1
        who = f" of worker {entry['worker']}" if entry.get("worker") else ""
        log.warning(
            "%s certificate %s%s %s (%s warning): replace it before it stops every connection",
            entry["role"],
            entry["thumbprint"],
            who,
            describe_expiry(entry["days_left"]),
            entry["warning"],
        )
    return count


async def serve_metrics(call: Call) -> web.StreamResponse:
    """The Prometheus text exposition; certificate and worker gauges are refreshed first."""
    metrics = metrics_of(call.request.app)
    if metrics is None:
        raise web.HTTPNotFound()
    state = call.state
    entries = await fleet_certificates(state, metrics.serving)
    metrics.days_left.clear()
    for entry in entries:
        if entry["days_left"] is None:
            continue
        metrics.days_left.labels(
            role=entry["role"], thumbprint=entry["thumbprint"], worker=entry.get("worker") or ""
        ).set(round(entry["days_left"], 3))
    workers = await state.db(state.catalog.list_workers)
    now = state.clock()
    metrics.workers.labels(state="enabled").set(sum(1 for w in workers if w.is_enabled))
    metrics.workers.labels(state="disabled").set(sum(1 for w in workers if not w.is_enabled))
    metrics.workers.labels(state="online").set(sum(1 for w in workers if worker_view(w, now)["online"]))
    for status, count in (await state.db(state.catalog.execution_counts)).items():
        metrics.executions.labels(status=status.label).set(count)
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


ENDPOINTS = (
    Endpoint(
        "GET",
        routes.ADMIN_CERTIFICATES,
        list_certificates,
        "admin",
        "Every fleet certificate (master, admin, workers) with days_left and warning (30d, 7d, expired)",
        answer="array",
    ),
    Endpoint(
        "GET",
        routes.METRICS,
        serve_metrics,
        "executor",
        "Prometheus metrics: certificate days left, TLS handshake failures, refusals, leases, workers",
        answer=None,
    ),
)
