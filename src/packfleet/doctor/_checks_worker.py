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

from packfleet.config import WorkerSettings, load_worker_settings, settings_path, split_endpoints
from packfleet.doctor._common import (
    check_key_pair,
    expiry_finding,
    key_file_findings,
    names_of,
    service_account,
)
from packfleet.doctor._findings import Finding, error, ok, warning
from packfleet.errors import CertificateNotFound, PackfleetError, TlsError
from packfleet.pki import CertStore
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
_IMPORT_MASTER = "packfleet cert import master.cer --store Root"
_NEW_WORKER_CERT = (
    'packfleet cert create -n "CN=NAME;CN=IP" --store My, then the seed\'s "change the worker '
    'certificate" steps (or a new join: packfleet worker join TOKEN)'
)


def check_worker(home: Path, *, now: datetime, unit: Path | None = None, probe: bool = True) -> list[Finding]:
    """Every worker check, local ones first, then the ones that talk to the master."""
    try:
        settings = load_worker_settings(home)
    except PackfleetError as exc:
        return [error("worker.settings", exc.message, exc.fix)]
    findings = [ok("worker.settings", f"{settings_path(home, 'worker')} parses")]
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
            fix=f"on the master: packfleet manager worker connect {agent} --token, then here: "
            "packfleet worker join TOKEN",
        )
    if view.get("certificate_status") not in (None, "active"):
        return error(
            check,
            f"the master sees this certificate of {label} as {view.get('certificate_status')}: a newer "
            "one replaced it",
            fix=f"on the master: packfleet manager worker connect {agent} --token, then here: "
            "packfleet worker join TOKEN",
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
    thumbprint = settings.worker_https_cert_thumbprint
    check = "worker.certificate"
    if not thumbprint:
        return [
            error(
                check,
                f"WorkerHttpsCertThumbprint is empty in {settings_path(home, 'worker')}",
                fix="packfleet worker init --master URL --master-cert master.cer",
            )
        ]
    store = CertStore(home, settings.store_name)
    try:
        cred = store.get(thumbprint)
    except CertificateNotFound:
        return [
            error(
                check,
                f"the worker certificate {thumbprint} (WorkerHttpsCertThumbprint) is not in store "
                f"{store.name} ({store.path}, StoreName {settings.store_name})",
                fix=f"packfleet cert list --store {store.name}, then: packfleet settings set worker "
                "WorkerHttpsCertThumbprint THUMBPRINT",
            )
        ]
    except PackfleetError as exc:
        return [error(check, exc.message, exc.fix)]
    findings = check_key_pair(
        "worker", cred, store, what="worker certificate", needs="it cannot prove this worker's identity"
    )
    if cred.private_key is None:
        return findings
    account, problem = service_account("worker.key-access", home, UNIT, unit)
    if problem is not None:
        findings.append(problem)
    if account is not None:
        findings += key_file_findings(
            "worker.key-access",
            store.key_path(thumbprint),
            [home, home / "certs", store.path],
            account,
            thumbprint=thumbprint,
            store=store.name,
        )
    findings.append(
        expiry_finding(
            "worker.expiry", "the worker certificate", cred.info(store.name), now, _NEW_WORKER_CERT
        )
    )
    return findings


def _endpoints(home: Path, settings: WorkerSettings, findings: list[Finding]) -> list[tuple[str, int]]:
    if not settings.master_endpoint:
        findings.append(
            error(
                "worker.endpoint",
                f"MasterEndpoint is empty in {settings_path(home, 'worker')}",
                fix="packfleet settings set worker MasterEndpoint https://MASTER:8391",
            )
        )
        return []
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
    pin = settings.master_https_cert_thumbprint
    check = "worker.master-pin"
    if not pin:
        findings.append(
            error(
                check,
                f"MasterHttpsCertThumbprint is empty in {settings_path(home, 'worker')}: this worker "
                "trusts no master",
                fix=f"{_IMPORT_MASTER} && packfleet settings set worker MasterHttpsCertThumbprint THUMBPRINT",
            )
        )
        return False
    root = CertStore(home, "Root")
    try:
        info = root.info(pin)
    except CertificateNotFound:
        findings.append(
            error(
                check,
                f"cert not in Root: the pinned master certificate {pin} (MasterHttpsCertThumbprint) is "
                f"not in this worker's Root store ({root.path}), so the worker trusts no master (seed "
                "step 5.1 was skipped)",
                fix=_IMPORT_MASTER,
            )
        )
        return False
    except PackfleetError as exc:
        findings.append(error(check, exc.message, exc.fix))
        return False
    findings.append(ok(check, f"the pinned master certificate {pin} is in the Root store"))
    good = True
    for endpoint in endpoints:
        host = endpoint[0]
        names = ", ".join(names_of(info)) or "no names"
        if info.matches_host(host):
            findings.append(ok("worker.master-host", f"endpoint host {host!r} is among the master's names"))
        else:
            good = False
            findings.append(
                error(
                    "worker.master-host",
                    f"wrong host: the MasterEndpoint host {host!r} is not among the names of the pinned "
                    f"master certificate {pin} ({names}); TLS refuses the connection",
                    fix=f"packfleet settings set worker MasterEndpoint https://{names_of(info)[0]}:"
                    f"{endpoint[1]}   (or re-create the master certificate with --cn {host})",
                )
            )
    findings.append(
        expiry_finding(
            "worker.master-expiry",
            "the pinned master certificate",
            info,
            now,
            "on the master: packfleet manager rotate master-cert (or the seed's 'change the master "
            "certificate' steps)",
        )
    )
    return good


def _served(settings: WorkerSettings, endpoint: tuple[str, int], findings: list[Finding]) -> bool:
    """Which certificate does the master actually serve? The seed's "thumbprint mismatch"."""
    host, port = endpoint
    check = "worker.master-served"
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
    pin = settings.master_https_cert_thumbprint
    pins = [p for p in (pin, settings.next_master_https_cert_thumbprint) if p]
    if peer.thumbprint not in pins:
        findings.append(
            error(
                check,
                f"thumbprint mismatch: the master at {host}:{port} serves certificate {peer.thumbprint} but "
                f"this worker pins MasterHttpsCertThumbprint {pin or '(none)'}; the master certificate was "
                "changed and this worker was not (seed step 5)",
                fix=f"copy the new master.cer here, then: {_IMPORT_MASTER} && packfleet settings set worker "
                f"MasterHttpsCertThumbprint {peer.thumbprint}",
            )
        )
        return False
    findings.append(ok(check, f"the master at {host}:{port} serves the pinned certificate {peer.thumbprint}"))
    return True


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
    fix = "synchronise both clocks: timedatectl set-ntp true (on the master and on this worker)"
    if abs(skew) > SKEW_ERROR_SECONDS:
        findings.append(error("worker.clock", text + ": certificates may look not yet valid", fix=fix))
    elif abs(skew) > SKEW_WARNING_SECONDS:
        findings.append(warning("worker.clock", text + ": leases and heartbeats drift", fix=fix))
    else:
        findings.append(ok("worker.clock", text))
    return findings
