"""Worker certificate rotation, the worker's half, and how a separate command reaches the agent.

The seed's "change the worker certificate" takes six manual steps and a restart. Here:

1. :func:`register_next_certificate` makes the new certificate (same names, key type and lifetime),
   signs a proof of possession with its key and registers it with the master over the *current*
   certificate's connection (``POST /api/v1/worker/certificate``). Only when the master has trusted
   it does the worker store it (My, and its own Root as seed step 2), set WorkerHttpsCertThumbprint
   and leave a note (``<home>/rotation.json``) naming the certificate to retire.
2. The agent switches: new connections present the new certificate (``MasterClient.replace_context``;
   requests in flight on the old one finish).
3. :func:`retire_previous` asks the master, with the new certificate, to retire the old one, then
   deletes it from My and Root (seed step 3's ``certmgr /del``) and removes the note.

``packfleet worker rotate-cert`` runs in its own process, beside ``worker run``: it does step 1 with
the worker's identity and sends SIGHUP to the agent, whose pid it reads from ``<home>/worker.pid``
(written at start with the process's start time, so a stale file naming a recycled pid is ignored).
SIGHUP was already the agent's "re-read settings and certificates"; on reload the agent sees the note
and does step 3 itself, once its new connections work. A signal reaches the agent at once, where a
file watch would poll. The agent renews by itself once two thirds of the certificate's lifetime have
passed (checked at start and at every heartbeat).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from packfleet.config import atomic_write, load_worker_settings, set_setting
from packfleet.errors import CertificateExpired, CertificateNotFound
from packfleet.pki import CertInfo, CertStore, Credential, export_certificate, sign_proof, successor_of
from packfleet.protocol import (
    CertificateRenewal,
    CertificateRenewalReply,
    CertificateRetirement,
    decode,
    encode,
    renewal_proof_message,
    routes,
)
from packfleet.transport import MasterClient
from packfleet.trust import READMIT_FIX, WORKER, own_dates, raise_first
from packfleet.worker._identity import WorkerIdentity

log = logging.getLogger("packfleet.worker")

PID_FILE = "worker.pid"
PENDING_FILE = "rotation.json"
WORKER_CER = "worker.cer"
#: Renew once this share of the certificate's lifetime has passed: a year-long certificate is renewed
#: four months before it expires, leaving time to notice a worker that cannot renew.
RENEW_AT = 2 / 3


def readmit_fix() -> str:
    """The way back in for a worker whose certificate the master can no longer accept."""
    return READMIT_FIX


def renewal_due(info: CertInfo, now: datetime) -> bool:
    """Whether two thirds of the certificate's lifetime (``not_before`` to ``not_after``) have passed."""
    return now >= info.not_before + (info.not_after - info.not_before) * RENEW_AT


def check_not_expired(info: CertInfo, now: datetime) -> None:
    """Raise :class:`CertificateExpired`, in plain words, when the worker certificate has expired.

    The words and the fix are the trust rule's (:func:`packfleet.trust.own_dates`), as ``doctor``
    and the TLS failure explainer give them.
    """
    if now < info.not_after:
        return
    raise_first(f for f in own_dates(WORKER, info, now) if f.error is CertificateExpired)


@dataclass(frozen=True)
class Pending:
    """The note left between registering a new certificate and retiring the old one."""

    retire: str
    new: str


def read_pending(home: Path) -> Pending | None:
    try:
        data = json.loads((home / PENDING_FILE).read_text("utf-8"))
        return Pending(retire=str(data["retire"]), new=str(data["new"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        log.error("ignoring %s: it is not a certificate rotation note", home / PENDING_FILE)
        return None


async def register_next_certificate(
    home: Path, identity: WorkerIdentity, client: MasterClient, *, now: datetime | None = None
) -> Credential:
    """Make the next worker certificate, register it over ``client`` (the current one) and switch to it.

    The settings change only after the master has trusted the new certificate, so a refusal leaves
    the worker exactly as it was.
    """
    moment = now or datetime.now(UTC)
    info = identity.certificate
    check_not_expired(info, moment)
    new = successor_of(info)
    assert new.private_key is not None  # noqa: S101 - create_self_signed always makes the key
    agent_id = identity.settings.agent_id
    signed_at = moment.isoformat()
    message = renewal_proof_message(agent_id, new.thumbprint, info.thumbprint, signed_at)
    body = CertificateRenewal(
        agent_id=agent_id,
        cert_pem=new.cert_pem().decode("ascii"),
        signed_at=signed_at,
        proof=base64.b64encode(sign_proof(new.private_key, message)).decode("ascii"),
    )
    reply = decode(
        CertificateRenewalReply,
        await client.request("POST", routes.WORKER_CERTIFICATE, json_body=encode(body)),
    )
    store = CertStore(home, identity.settings.store_name)
    store.add(new)  # MakeCert ... -ss My
    CertStore(home, "Root").add(Credential(new.certificate))  # seed step 2: also in its own Root
    pending = {"retire": info.thumbprint, "new": new.thumbprint}
    atomic_write(home / PENDING_FILE, json.dumps(pending) + "\n", mode=0o600)
    set_setting(home, "worker", "WorkerHttpsCertThumbprint", new.thumbprint)
    export_certificate(new, home / WORKER_CER)
    log.info(
        "the master trusts the new worker certificate %s (valid until %s); WorkerHttpsCertThumbprint "
        "now names it, %s is retired next",
        reply.thumbprint,
        reply.not_after,
        info.thumbprint,
    )
    return new


def resume_rotation(home: Path, pending: Pending) -> bool:
    """Finish a rotation that stopped half-way; True when WorkerHttpsCertThumbprint now names the new one.

    Between registering the new certificate with the master and switching to it, a crash or a failed
    reload can leave the note behind while the agent still uses the old certificate. Left alone, that
    note would keep automatic renewal from ever running again and the certificate would expire. If the
    new certificate is here with its key, point the settings at it; if it is gone, drop the note so
    renewal starts over.
    """
    settings = load_worker_settings(home)
    store = CertStore(home, settings.store_name)
    if store.contains(pending.new) and store.get(pending.new).private_key is not None:
        if settings.worker_https_cert_thumbprint != pending.new:
            set_setting(home, "worker", "WorkerHttpsCertThumbprint", pending.new)
        return True
    (home / PENDING_FILE).unlink(missing_ok=True)
    return False


async def retire_previous(home: Path, identity: WorkerIdentity, client: MasterClient) -> str | None:
    """Retire the certificate the rotation note names, once ``identity`` uses the new one.

    Returns the retired thumbprint, or None when there is nothing to do yet.
    """
    pending = read_pending(home)
    if pending is None or identity.certificate.thumbprint != pending.new:
        return None
    body = CertificateRetirement(agent_id=identity.settings.agent_id, thumbprint=pending.retire)
    await client.request("POST", routes.WORKER_CERTIFICATE_RETIRE, json_body=encode(body))
    for store in {identity.settings.store_name, "Root"}:
        with contextlib.suppress(CertificateNotFound):
            CertStore(home, store).delete(pending.retire)  # seed step 3: certmgr /del the old one
    with contextlib.suppress(FileNotFoundError):
        (home / PENDING_FILE).unlink()
    log.info("the old worker certificate %s is retired on the master and deleted here", pending.retire)
    return pending.retire


# -- reaching the running agent -------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (``/proc/<pid>/stat`` field 22), or None if it is gone.

    A pid alone may name another process after a crash and a reboot; pid and start time together
    name one process for good.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("ascii", errors="replace")
    except OSError:
        return None
    # Field 2 (the command name) is in parentheses and may hold spaces: count from the last ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def write_pid_file(home: Path) -> Path:
    pid = os.getpid()
    path = home / PID_FILE
    atomic_write(path, f"{pid} {_start_time(pid) or ''}\n", mode=0o600)
    return path


def remove_pid_file(home: Path) -> None:
    path = home / PID_FILE
    with contextlib.suppress(OSError, ValueError):
        if path.read_text("ascii").split()[0] == str(os.getpid()):
            path.unlink()


def running_agent(home: Path) -> int | None:
    """The pid of the ``worker run`` of this home, if one runs."""
    try:
        parts = (home / PID_FILE).read_text("ascii").split()
        pid = int(parts[0])
    except (OSError, ValueError, IndexError):
        return None
    started = _start_time(pid)
    if started is None or (len(parts) > 1 and parts[1] != started):
        return None
    return pid


def signal_agent(home: Path, signum: signal.Signals = signal.SIGHUP) -> int | None:
    """Send ``signum`` to the running agent of ``home``; return its pid, or None if none runs."""
    pid = running_agent(home)
    if pid is None:
        return None
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return None
    return pid
