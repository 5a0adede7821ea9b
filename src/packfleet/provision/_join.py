"""``worker join TOKEN``: ``worker init`` and ``manager worker add`` in one command run on the worker.

The token (see :mod:`packfleet.protocol` ``JoinToken``) names the master and pins its certificate.
Joining goes in an order chosen so that a refusal leaves as little behind as possible:

1. parse the token (a malformed one changes nothing);
2. connect and check the master certificate's SHA-256 against the pin (a mismatch sends nothing
   and changes nothing);
3. make the worker certificate if this home has no usable one, and record it (with the AgentId) in
   WorkerSettings.config *before* asking, so that running the command again after a lost answer
   presents the same certificate, which the master accepts again without spending the token;
4. post the certificate with the token's secret and a signature proving this node holds its key;
5. trust the master certificate that was checked (Root store) and pin it in WorkerSettings.config.
"""

from __future__ import annotations

import base64
import logging
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from packfleet.config import WorkerSettings, load_worker_settings, save_worker_settings, settings_path
from packfleet.errors import ApiError, PkiError
from packfleet.pki import (
    CertStore,
    Credential,
    check_usable,
    export_certificate,
    load_credential_bytes,
    local_ips,
    sign_proof,
)
from packfleet.protocol import (
    JoinChallenge,
    JoinReply,
    JoinRequest,
    decode,
    encode,
    join_proof_message,
    parse_join_token,
    routes,
)
from packfleet.provision._worker import WORKER_CER, create_worker_certificate
from packfleet.transport import PinnedConnection

log = logging.getLogger("packfleet.provision")

#: A certificate with less life left than this is replaced at join rather than enrolled: it would
#: be refused again (OpenSSL checks dates even on pinned certificates) before anyone noticed.
_MIN_LIFE = timedelta(days=1)


@dataclass(frozen=True)
class WorkerJoin:
    """What ``worker join`` did; ``warnings`` are problems worth telling the person now."""

    home: Path
    agent_id: str
    display_name: str
    thumbprint: str
    master_endpoint: str
    master_thumbprint: str
    enabled: bool
    repeated: bool
    created_certificate: bool
    message: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "home": str(self.home),
            "agent_id": self.agent_id,
            "display_name": self.display_name,
            "thumbprint": self.thumbprint,
            "master_endpoint": self.master_endpoint,
            "master_thumbprint": self.master_thumbprint,
            "enabled": self.enabled,
            "repeated": self.repeated,
            "created_certificate": self.created_certificate,
            "message": self.message,
            "warnings": self.warnings,
        }


def _first_ip(cred: Credential) -> str | None:
    """The address the old certificate named, so the fresh one keeps the worker's names."""
    return next(iter(cred.info().san_ip), None)


def _usable_certificate(home: Path, thumbprint: str) -> Credential | None:
    """This home's worker certificate when it can still be enrolled, else None (make a new one)."""
    my = CertStore(home, "My")
    if not thumbprint or not my.contains(thumbprint):
        return None
    cred = my.get(thumbprint)
    try:
        check_usable(cred, purposes=("client",), now=datetime.now(UTC) + _MIN_LIFE)
    except PkiError as exc:
        log.info("not enrolling certificate %s: %s", thumbprint, exc.message)
        return None
    return cred if cred.private_key is not None else None


def join_worker(
    home: Path,
    token_text: str,
    *,
    name: str | None = None,
    ip: str | None = None,
    key_type: str = "ecdsa-p256",
    days: int = 365,
    timeout: float = 30.0,
) -> WorkerJoin:
    """Join the master that ``token_text`` names, as worker ``name`` of this ``home``.

    >>> join_worker(Path("/srv/w"), "pfjoin1.3f9c0a1b2d4e....", name="worker1")  # doctest: +SKIP
    WorkerJoin(agent_id='6f1c...', enabled=False, ...)
    """
    token = parse_join_token(token_text)
    with PinnedConnection(token.endpoint, token.master_sha256, timeout=timeout) as conn:
        master = Credential(load_credential_bytes(conn.peer_der, source="the master certificate").certificate)
        challenge = decode(JoinChallenge, conn.request_json("GET", routes.JOIN))
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        known = settings_path(home, "worker").exists()
        settings = load_worker_settings(home) if known else WorkerSettings()
        display_name = name or (settings.display_name if known else socket.gethostname())
        cred = _usable_certificate(home, settings.worker_https_cert_thumbprint)
        created = cred is None
        if cred is None:
            address = ip or next(iter(local_ips()), "127.0.0.1")
            names = list(dict.fromkeys([display_name, address]))
            cred = create_worker_certificate(home, names, key_type=key_type, days=days)

        def ask(cred: Credential) -> JoinReply:
            nonlocal settings
            # Recorded before asking: a retry after a lost answer must present this same certificate.
            save_worker_settings(
                home,
                replace(settings, display_name=display_name, worker_https_cert_thumbprint=cred.thumbprint),
            )
            settings = load_worker_settings(home)  # AgentId generated on first save
            assert cred.private_key is not None  # noqa: S101 - _usable_certificate and create give keys
            proof = join_proof_message(token.token_id, challenge.issued_at, cred.sha256, settings.agent_id)
            request = JoinRequest(
                token_id=token.token_id,
                secret=token.secret_text,
                cert_pem=cred.cert_pem().decode("ascii"),
                agent_id=settings.agent_id,
                display_name=display_name,
                issued_at=challenge.issued_at,
                signature=base64.b64encode(sign_proof(cred.private_key, proof)).decode("ascii"),
            )
            return decode(JoinReply, conn.request_json("POST", routes.JOIN, encode(request)))

        try:
            reply = ask(cred)
        except ApiError as exc:
            # The certificate is fine here but the master revoked it (the worker's own log told the
            # administrator to run `manager worker connect --token`): a revoked certificate never
            # comes back, so this join makes the fresh one it needs and asks again, once.
            if created or exc.status not in (403, 409) or "was revoked" not in exc.message:
                raise
            log.info("certificate %s was revoked on the master: making a new one", cred.thumbprint)
            address = ip or _first_ip(cred) or next(iter(local_ips()), "127.0.0.1")
            names = list(dict.fromkeys([display_name, address]))
            cred = create_worker_certificate(home, names, key_type=key_type, days=days)
            created = True
            reply = ask(cred)

    warnings: list[str] = []
    info = CertStore(home, "Root").add(master)  # seed step 5.1: the master certificate in Root
    host = conn.host
    if not info.matches_host(host):
        names_text = ", ".join([*info.san_dns, *info.san_ip]) or "no names"
        warnings.append(
            f"the host {host!r} of {token.endpoint} is not among the master certificate's names "
            f"({names_text}); TLS will refuse it. Make a token with --endpoint naming one of them"
        )
    if reply.agent_id != settings.agent_id:
        warnings.append(
            f"the token was bound to worker {reply.agent_id}; this home takes that AgentId "
            f"(it had {settings.agent_id})"
        )
    save_worker_settings(
        home,
        replace(
            settings,
            master_endpoint=token.endpoint,
            master_https_cert_thumbprint=master.thumbprint,
            worker_https_cert_thumbprint=cred.thumbprint,
            agent_id=reply.agent_id,
        ),
    )
    export_certificate(cred, home / WORKER_CER, mode=0o600)
    log.info(
        "worker %s joined %s as %s with certificate %s",
        display_name,
        token.endpoint,
        reply.agent_id,
        cred.thumbprint,
    )
    return WorkerJoin(
        home=home,
        agent_id=reply.agent_id,
        display_name=reply.display_name,
        thumbprint=cred.thumbprint,
        master_endpoint=token.endpoint,
        master_thumbprint=master.thumbprint,
        enabled=reply.enabled,
        repeated=reply.repeated,
        created_certificate=created,
        message=reply.message,
        warnings=warnings,
    )
