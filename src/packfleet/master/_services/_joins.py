"""Workers admitted by a join token (``worker join``), and an existing worker connected to a new
certificate (``manager worker connect``): the call sequences behind ``master/_join_api``.

Both end the same way as ``manager worker add``: the certificate is recorded in the catalog, goes
into the master's Root store and is trusted at once, and the certificates it replaces leave the
store and lose their connections. The store files, the TLS material and the certificate lookups
run off the catalog's executor.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from pathlib import Path

from packfleet.catalog import ConnectOutcome, JoinTokenRecord, canonical_agent_id
from packfleet.errors import CatalogError, Conflict, InvalidValue, NotFound, PackfleetError
from packfleet.master._logsafe import safe
from packfleet.master._problems import Problem, forbidden
from packfleet.master._services._base import off_catalog
from packfleet.master._state import MasterState
from packfleet.master._times import PROOF_WINDOW, parse_aware_time
from packfleet.master._tls import load_tls_material
from packfleet.master._trust import cut_off, remove_from_root, trust_in_root
from packfleet.master._wakeup import TASKS
from packfleet.pki import CertStore, Credential, check_usable, load_credential_bytes, verify_proof
from packfleet.protocol import JoinChallenge, JoinReply, JoinRequest, join_proof_message, secret_matches
from packfleet.thumbprint import is_thumbprint, normalize_thumbprint

log = logging.getLogger("packfleet.master")

_JOIN_AGAIN = (
    "on the master: packfleet manager token create   (then on the worker: packfleet worker join TOKEN)"
)


@dataclass(frozen=True)
class Connected:
    """A worker connected to a new certificate, and which of its old ones left the Root store."""

    outcome: ConnectOutcome
    removed_from_root: list[str]


def _refused(detail: str, fix: str = _JOIN_AGAIN) -> Problem:
    # A refused join names no certificate: the caller has none the master trusts yet.
    return forbidden(detail, thumbprint=None, fix=fix)


class JoinService:
    """Join with a token, and connect a worker to a new certificate."""

    def __init__(self, state: MasterState) -> None:
        self._state = state

    def challenge(self) -> JoinChallenge:
        """The master's time, which the worker signs into its proof of possession."""
        return JoinChallenge(issued_at=self._state.clock().isoformat())

    async def join(self, ask: JoinRequest) -> JoinReply:
        """Admit ``ask.cert_pem`` with a join token; a retry of a completed join answers the same.

        A bad agent id, certificate or signature encoding is an :class:`InvalidValue`; an unknown
        token, a wrong secret, a stale or false proof and a used-up token are refused (403).
        """
        state = self._state
        try:
            agent_id = canonical_agent_id(ask.agent_id)
        except CatalogError as exc:
            raise InvalidValue(f"agent_id: {exc.message}", fix=exc.fix) from None
        await self._checked_token(ask.token_id, ask.secret)
        public = self._enrolled_certificate(ask.cert_pem)
        self._check_proof(ask, public, agent_id)
        try:
            outcome = await state.db(
                state.catalog.redeem_join_token,
                ask.token_id,
                public.cert_pem(),
                agent_id=agent_id,
                display_name=ask.display_name.strip(),
            )
        except Conflict as exc:
            raise _refused(exc.message, exc.fix or _JOIN_AGAIN) from None
        actor = f"worker:{outcome.agent_id}"
        await self._retire(list(outcome.retired), f"worker {outcome.agent_id} joined again")
        # Also on a retry: the first attempt may have died between the catalog and the store, or its
        # reload may have been refused (503); adding again is harmless and serves the store as it is.
        await trust_in_root(state, public, actor=actor)
        state.principals.invalidate([public.thumbprint])
        state.wakeups.notify(TASKS)
        word = "enabled" if outcome.enabled else "disabled until an administrator enables it"
        log.info(
            "worker %s (%s) joined with token %s and certificate %s%s",
            safe(outcome.display_name),
            outcome.agent_id,
            outcome.token_id,
            outcome.thumbprint,
            " (retry)" if outcome.repeated else "",
        )
        message = f"worker {outcome.display_name!r} ({outcome.agent_id}) joined; it is {word}"
        if not outcome.enabled:
            message += f": packfleet manager worker enable {outcome.agent_id}"
        material = await off_catalog(load_tls_material, state.home)
        return JoinReply(
            agent_id=outcome.agent_id,
            display_name=outcome.display_name,
            worker_thumbprint=outcome.thumbprint,
            master_thumbprint=material.thumbprint,
            enabled=outcome.enabled,
            repeated=outcome.repeated,
            message=message,
        )

    async def connect(self, ref: str, *, cert_pem: str, thumbprint: str, actor: str) -> Connected:
        """Replace worker ``ref``'s certificates by one: ``cert_pem``, or ``thumbprint`` naming one
        the master holds (pending in the catalog, or in its Root store). AgentId and enabled state
        stay; the old certificates leave the Root store and lose their connections."""
        state = self._state
        if bool(cert_pem) == bool(thumbprint):
            raise InvalidValue(
                "give either cert_pem (the worker's new certificate) or thumbprint (one the master holds)",
                fix="packfleet manager worker connect REF --cert worker.cer (or --cert THUMBPRINT)",
            )
        pem = cert_pem or (await self._held_certificate(thumbprint)).decode()
        public = self._enrolled_certificate(pem)
        outcome = await state.db(
            state.catalog.connect_worker_certificate, ref, public.cert_pem(), actor=actor
        )
        removed = await self._retire(list(outcome.retired), f"worker {outcome.agent_id} connected anew")
        await trust_in_root(state, public, actor=actor)
        state.wakeups.notify(TASKS)
        return Connected(outcome, removed)

    async def _checked_token(self, token_id: str, secret: str) -> JoinTokenRecord:
        state = self._state
        try:
            token = await state.db(state.catalog.get_join_token, token_id)
        except NotFound:
            token = None
        # One answer for "no such token" and "wrong secret", so the route tells a guesser nothing.
        if token is None or not secret_matches(secret, token.secret_hash):
            raise _refused(f"join token {token_id!r} is not known to this master, or its secret is wrong")
        return token

    def _enrolled_certificate(self, cert_pem: str) -> Credential:
        try:
            public = Credential(load_credential_bytes(cert_pem.encode(), source="cert_pem").certificate)
            check_usable(public, purposes=("client",), now=self._state.clock(), peer=True)
        except PackfleetError as exc:
            raise InvalidValue(f"the worker certificate cannot be used: {exc.message}", fix=exc.fix) from None
        return public

    def _check_proof(self, ask: JoinRequest, public: Credential, agent_id: str) -> None:
        now = self._state.clock()
        signed = parse_aware_time(ask.issued_at, "issued_at")
        try:
            signature = base64.b64decode(ask.signature, validate=True)
        except (ValueError, binascii.Error):
            raise InvalidValue("signature must be base64") from None
        if abs(now - signed) > PROOF_WINDOW:
            raise _refused(
                f"the join proof was signed for {ask.issued_at}, more than {PROOF_WINDOW} from the master's "
                f"time {now.isoformat()}",
                fix="run packfleet worker join again (it asks the master for the time first)",
            )
        message = join_proof_message(ask.token_id, ask.issued_at, public.sha256, agent_id)
        if not verify_proof(public.certificate, message, signature):
            raise _refused(
                "the signature does not prove possession of the private key of certificate "
                f"{public.thumbprint}",
                fix="join from the worker that holds the certificate's key: packfleet worker join TOKEN",
            )

    async def _retire(self, thumbprints: list[str], why: str) -> list[str]:
        """Drop replaced certificates from the Root store and end their connections."""
        if not thumbprints:
            return []
        state = self._state
        removed = await remove_from_root(state, thumbprints)
        state.principals.invalidate(thumbprints)
        cut_off(state, thumbprints, why)
        return removed

    async def _held_certificate(self, thumbprint: str) -> bytes:
        """The certificate ``thumbprint`` as the master holds it: pending in the catalog, or in Root."""
        state = self._state
        if not is_thumbprint(thumbprint):
            raise InvalidValue(f"thumbprint {thumbprint!r} is not 40 hex digits (a SHA-1 thumbprint)")
        thumbprint = normalize_thumbprint(thumbprint)
        pem = await state.db(state.catalog.certificate_pem, thumbprint)
        if pem is not None:
            return pem
        try:
            # A store file, not the catalog: off the catalog's executor.
            return await off_catalog(_root_pem, state.home, thumbprint)
        except PackfleetError:
            raise Problem(
                404,
                "not-found",
                f"certificate {thumbprint} is neither in the catalog nor in the master's Root store",
                thumbprint=thumbprint,
                fix="give the certificate file instead: "
                "packfleet manager worker connect REF --cert worker.cer",
            ) from None


def _root_pem(home: Path, thumbprint: str) -> bytes:
    return CertStore(home, "Root").get(thumbprint).cert_pem()
