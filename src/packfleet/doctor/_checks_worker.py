"""``doctor`` on a worker home: its certificate and key, the pinned master, and the master itself.

The seed's "change the worker certificate" and step 5 of "change the master certificate" are done by
hand on each worker; each half-done step has a finding here: the worker certificate not in the store
WorkerHttpsCertThumbprint names, its key unreadable by the service account (winhttpcertcfg skipped),
the master certificate not in Root, MasterHttpsCertThumbprint pinning a certificate the master no
longer serves, an endpoint host the master certificate does not name, clocks too far apart.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

from packfleet import trust
from packfleet.config import WorkerSettings, load_worker_settings, split_endpoints
from packfleet.doctor._common import from_rules, read_settings, service_account
from packfleet.doctor._findings import Finding, error, ok, warning
from packfleet.errors import PackfleetError, TlsError
from packfleet.protocol import routes
from packfleet.transport import fetch_server_certificate, parse_endpoint
from packfleet.worker import load_identity

UNIT = "packfleet-worker.service"
#: Clock skew worth a warning: leases (LeaseInterval, one minute by default) and heartbeat times are
#: compared across machines.
SKEW_WARNING_SECONDS = 60.0
#: Clock skew that breaks TLS: certificates are back-dated by five minutes (packfleet.pki), so a
#: larger skew makes a freshly made certificate "not yet valid" on the other machine.
SKEW_ERROR_SECONDS = 300.0


def check_worker(home: Path, *, now: datetime, unit: Path | None = None, probe: bool = True) -> list[Finding]:
    """Every worker check, local ones first, then the ones that talk to the master."""
    settings, parsed = read_settings(home, "worker", load_worker_settings)
    findings = [parsed]
    if settings is None:
        return findings
    findings += from_rules(trust.worker_settings_rule(home, settings))
    if settings.worker_https_cert_thumbprint:
        findings += _own_certificate(home, settings, now, unit)
    endpoints = _endpoints(home, settings, findings)
    pinned_ok = _pinned_master(home, settings, endpoints, now, findings)
    if probe and endpoints:
        # Every listed master is probed: a standby that fails over badly is found before it is needed.
        served = [_served(settings, endpoint, findings) for endpoint in endpoints]
        if all(served) and pinned_ok:
            health = _health(home)
            findings += health
            if health and health[0].check == "worker.tls" and health[0].severity == "ok":
                findings.append(_master_view(home, settings))
    return findings


def _master_view(home: Path, settings: WorkerSettings) -> Finding:
    """What the master thinks of this worker: not added yet, disabled, revoked, offline, online."""
    check = "worker.master_view"

    async def ask() -> dict[str, object]:
        async with load_identity(home).connect() as client:
            answer: dict[str, object] = await client.request("GET", routes.WORKER_SELF, timeout=10.0)
            return answer

    try:
        view = asyncio.run(ask())
    except PackfleetError as exc:
        return warning(check, f"the master did not say how it sees this worker: {exc.message}", exc.fix)
    agent = str(view.get("agent_id") or settings.agent_id)
    if not view.get("known"):
        return warning(
            check,
            f"the master trusts certificate {view.get('thumbprint')} but no worker has it yet: the "
            "worker registers at its first heartbeat",
            fix="packfleet worker run (then on the master: packfleet manager worker enable NAME)",
        )
    label = f"worker {view.get('display_name')} ({agent})"
    if view.get("certificate_status") == "revoked" or view.get("state") == "revoked":
        return error(
            check,
            f"the master revoked this certificate of {label}",
            fix=trust.READMIT.format(worker=agent),
        )
    if view.get("certificate_status") not in (None, "active"):
        return error(
            check,
            f"the master sees this certificate of {label} as {view.get('certificate_status')}: a newer "
            "one replaced it",
            fix=trust.READMIT.format(worker=agent),
        )
    if not view.get("is_enabled"):
        return warning(
            check,
            f"the master knows {label} but it is disabled: it gets no tasks",
            fix=f"on the master: packfleet manager worker enable {agent}",
        )
    if view.get("state") != "online":
        return warning(
            check,
            f"the master knows {label}, enabled, but sees it {view.get('state')}: no recent heartbeat",
            fix="start the worker: packfleet worker run (or systemctl start the worker's service)",
        )
    return ok(check, f"the master sees {label} enabled and online")


def _own_certificate(home: Path, settings: WorkerSettings, now: datetime, unit: Path | None) -> list[Finding]:
    """The worker's own certificate, key, key access and expiry: the rule its loader applies."""
    account, problem = service_account("worker.key-access", home, UNIT, unit)
    findings = from_rules(
        trust.own_certificate_rule(
            home,
            trust.WORKER,
            store_name=settings.store_name,
            thumbprint=settings.worker_https_cert_thumbprint,
            now=now,
            account=account,
        )
    )
    return findings if problem is None else [*findings, problem]


def _endpoints(home: Path, settings: WorkerSettings, findings: list[Finding]) -> list[tuple[str, int]]:
    if not settings.master_endpoint:
        return []  # worker.endpoint: the settings rule says so
    try:
        return [parse_endpoint(url) for url in split_endpoints(settings.master_endpoint)]
    except PackfleetError as exc:
        findings.append(error("worker.endpoint", exc.message, exc.fix))
        return []


def _pinned_master(
    home: Path,
    settings: WorkerSettings,
    endpoints: list[tuple[str, int]],
    now: datetime,
    findings: list[Finding],
) -> bool:
    """Each pinned master certificate against the Root store, its dates and every endpoint host."""
    if not settings.master_https_cert_thumbprint:
        return False  # worker.master-pin: the settings rule says so
    judged, _found = trust.pinned_master_rule(home, settings, endpoints, now=now)
    findings += from_rules(judged)
    return not any(f.severity == "error" and f.check != "worker.master-expiry" for f in judged)


def _served(settings: WorkerSettings, endpoint: tuple[str, int], findings: list[Finding]) -> bool:
    """Which certificate does the master actually serve? The seed's "thumbprint mismatch"."""
    host, port = endpoint
    try:
        peer = fetch_server_certificate(host, port, timeout=5.0)
    except (OSError, TlsError, ValueError) as exc:
        findings.append(
            error(
                "worker.reachability",
                f"cannot reach the master at {host}:{port}: {getattr(exc, 'strerror', None) or exc}",
                fix="check that the master runs (packfleet master run) and that MasterEndpoint names it",
            )
        )
        return False
    pins = [thumbprint for _key, thumbprint in trust.pin_keys(settings) if thumbprint]
    served = trust.served_rule(peer.info, pins, role="worker", host=host, port=port)
    findings += from_rules([served])
    return served.severity == "ok"


def _health(home: Path) -> list[Finding]:
    """Connect as the worker does (its certificate, its pins) and compare clocks with the master's."""
    try:
        identity = load_identity(home)
    except PackfleetError as exc:
        return [error("worker.identity", exc.message, exc.fix)]

    async def ask() -> tuple[dict[str, object], float, float]:
        async with identity.connect() as client:
            sent = time.time()
            answer = await client.request("GET", routes.HEALTH, timeout=10.0)
            return answer, sent, time.time()

    try:
        answer, sent, received = asyncio.run(ask())
    except TlsError as exc:
        return [error("worker.tls", exc.message, exc.fix)]
    except PackfleetError as exc:
        return [error("worker.reachability", exc.message, exc.fix)]
    findings = [ok("worker.tls", "mutual TLS with the master works with this worker's certificate and pins")]
    refused = answer.get("refused_bind") if isinstance(answer, dict) else None
    if isinstance(refused, dict):
        findings.append(
            error(
                "worker.binding",
                f"the master refuses to bind this worker's certificate {refused.get('thumbprint')} to "
                f"AgentId {refused.get('agent_id')}: {refused.get('detail')}",
                fix=str(refused.get("fix") or "packfleet manager worker connect AGENT_ID --cert THUMBPRINT"),
            )
        )
    master_time = answer.get("time") if isinstance(answer, dict) else None
    if not isinstance(master_time, str):
        findings.append(
            warning("worker.clock", "the master does not report its time; clock skew not checked")
        )
        return findings
    theirs = datetime.fromisoformat(master_time).timestamp()
    skew = theirs - (sent + received) / 2
    ahead = "ahead of" if skew > 0 else "behind"
    text = f"the master's clock is {abs(skew):.1f} s {ahead} this worker's"
    fix = trust.SYNC_CLOCKS
    if abs(skew) > SKEW_ERROR_SECONDS:
        findings.append(error("worker.clock", text + ": certificates may look not yet valid", fix=fix))
    elif abs(skew) > SKEW_WARNING_SECONDS:
        findings.append(warning("worker.clock", text + ": leases and heartbeats drift", fix=fix))
    else:
        findings.append(ok("worker.clock", text))
    return findings
