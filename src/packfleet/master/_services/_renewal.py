"""Worker certificate renewal, the master's half (the routes are ``master/_renewal``): a worker's next
certificate registered over its current one with proof of possession, its old one retired."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from datetime import datetime

from packfleet import protocol
from packfleet.errors import InvalidValue, PackfleetError
from packfleet.master._auth import Caller
from packfleet.master._logsafe import safe
from packfleet.master._problems import forbidden
from packfleet.master._state import MasterState
from packfleet.master._times import PROOF_WINDOW, parse_aware_time
from packfleet.master._trust import reload_after_removal, remove_from_root, trust_in_root
from packfleet.master._wakeup import TASKS
from packfleet.pki import Credential, check_usable, load_credential_bytes, verify_proof

log = logging.getLogger("packfleet.master")

#: After a retirement, how long the old certificate's connections may finish what they carry before
#: they are closed. Long-polls of that certificate are woken at once and answer empty, and the
#: worker sends nothing new on them, so this only covers answers already on their way.
RETIRE_GRACE = 3.0


def _signed_at(text: str, now: datetime) -> datetime:
    moment = parse_aware_time(text, "signed_at")
    if abs(now - moment) > PROOF_WINDOW:
        raise InvalidValue(
            f"the proof was signed at {text}, more than {PROOF_WINDOW} from the master's time "
            f"{now.isoformat()}",
            fix="check the worker's clock (timedatectl), then: packfleet worker rotate-cert",
        )
    return moment


class RenewalService:
    """A worker's next certificate trusted, and its previous one retired, each asked by the worker
    itself (``caller``: its current certificate for ``register``, the new one for ``retire``)."""

    def __init__(self, state: MasterState) -> None:
        self._state = state

    async def register(
        self, ask: protocol.CertificateRenewal, *, caller: Caller
    ) -> protocol.CertificateRenewalReply:
        """Trust a worker's next certificate: Root store, bound to the same AgentId, trust reloaded.

        A certificate that is unusable, expired or signed too far from the master's time is an
        :class:`InvalidValue`; a proof not signed by the new key is refused (403).
        """
        state = self._state
        assert caller.thumbprint is not None  # noqa: S101 - the "worker" access rule guarantees it
        try:
            public = Credential(load_credential_bytes(ask.cert_pem.encode(), source="cert_pem").certificate)
            check_usable(public, purposes=("client",), now=state.clock(), peer=True)
        except PackfleetError as exc:
            raise InvalidValue(f"cert_pem: {exc.message}", fix=exc.fix) from None
        now = state.clock()
        info = public.info()
        if info.not_after <= now:
            raise InvalidValue(
                f"the new certificate {info.thumbprint} expired on {info.not_after.isoformat()}"
            )
        _signed_at(ask.signed_at, now)
        message = protocol.renewal_proof_message(
            ask.agent_id, info.thumbprint, caller.thumbprint, ask.signed_at
        )
        try:
            signature = base64.b64decode(ask.proof, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidValue("proof is not base64") from None
        if not verify_proof(public.certificate, message, signature):
            raise forbidden(
                f"the proof does not match certificate {info.thumbprint}: it was not signed by its key",
                thumbprint=caller.thumbprint,
                worker=caller.worker_label,
                fix="packfleet worker rotate-cert (signs with the new key it creates)",
            )
        record = await state.db(
            state.catalog.add_worker_certificate,
            public.cert_pem(),
            actor=caller.actor,
            agent_id=ask.agent_id,
        )
        await state.db(
            state.catalog.audit,
            caller.actor,
            "certificate.renew",
            record.thumbprint,
            {"agent_id": record.agent_id, "old": caller.thumbprint, "store": "Root"},
        )
        await trust_in_root(state, public, actor=caller.actor)
        log.info(
            "worker %s registered its next certificate %s (over %s)",
            safe(caller.worker_label),
            record.thumbprint,
            caller.thumbprint,
        )
        return protocol.CertificateRenewalReply(
            thumbprint=record.thumbprint,
            agent_id=record.agent_id or ask.agent_id,
            not_after=info.not_after.isoformat(),
        )

    async def retire(
        self, ask: protocol.CertificateRetirement, *, caller: Caller
    ) -> protocol.CertificateRetirementReply:
        """Retire a worker's old certificate, asked with its new one: catalog, Root store, connections."""
        state = self._state
        assert caller.thumbprint is not None  # noqa: S101 - the "worker" access rule guarantees it
        changed = await state.db(
            state.catalog.retire_worker_certificate,
            ask.thumbprint,
            agent_id=ask.agent_id,
            replaced_by=caller.thumbprint,
            actor=caller.actor,
        )
        old = ask.thumbprint.upper()
        removed = bool(await remove_from_root(state, [old]))
        state.principals.invalidate([old])
        # Long-polls still held on the old certificate re-check it when woken, and answer empty.
        state.wakeups.notify(TASKS)
        self._close_later(old)
        if removed:
            await reload_after_removal(state)
        if changed:
            log.info("worker %s retired its old certificate %s", safe(caller.worker_label), old)
        return protocol.CertificateRetirementReply(thumbprint=old, removed_from_root=removed)

    def _close_later(self, thumbprint: str) -> None:
        state = self._state

        async def close() -> None:
            await asyncio.sleep(RETIRE_GRACE)
            closed = state.connections.close([thumbprint])
            if closed:
                log.info("closed %d connection(s) of the retired certificate %s", closed, thumbprint)

        task = asyncio.get_running_loop().create_task(close())
        state.background.add(task)
        task.add_done_callback(state.background.discard)
