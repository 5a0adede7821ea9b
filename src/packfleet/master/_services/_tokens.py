"""Join tokens: made, listed and revoked by administrators, redeemed by ``worker join``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from packfleet.catalog import JoinTokenRecord, TokenBinding
from packfleet.errors import InvalidValue, PackfleetError
from packfleet.master._services._base import off_catalog
from packfleet.master._state import MasterState
from packfleet.master._tls import load_tls_material
from packfleet.pki import load_credential
from packfleet.protocol import CreateToken, hash_secret, new_join_token
from packfleet.transport import parse_endpoint

log = logging.getLogger("packfleet.master")


@dataclass(frozen=True)
class NewToken:
    """A token just made: the record, the token string (shown once, never stored) and the pin."""

    record: JoinTokenRecord
    token: str
    master_sha256: str
    agent_id: str | None


def served_pin_and_address(state: MasterState) -> tuple[str, str]:
    """SHA-256 of the certificate the binding serves, and MasterAddress (SSIS's MASTER_ADDRESS)."""
    material = load_tls_material(state.home)
    return load_credential(material.cert_file).sha256, material.settings.master_address


def token_view(record: JoinTokenRecord, binding: TokenBinding, now: datetime) -> dict[str, Any]:
    """A token as the admin routes show it, with its status judged on the master's clock."""
    if record.revoked_at is not None:
        status = "revoked"
    elif record.expires_at <= now:
        status = "expired"
    elif record.uses_left < 1:
        status = "used"
    else:
        status = "usable"
    data = record.to_dict()
    data |= {"uses": record.uses_left, "status": status, "agent_id": binding.agent_id}
    data["admitted"] = len(binding.delivered)
    return data


class TokenService:
    def __init__(self, state: MasterState) -> None:
        self._state = state

    async def create(
        self,
        *,
        actor: str,
        ttl_seconds: float = 3600.0,
        uses: int = 1,
        enable: bool = False,
        endpoint: str = "",
        worker: str = "",
        default_endpoint: str = "",
    ) -> NewToken:
        """Make a join token for ``endpoint`` (else MasterAddress, else ``default_endpoint``); with
        ``worker`` it is bound to that worker's AgentId. Bad values raise :class:`InvalidValue`."""
        state = self._state
        CreateToken(ttl_seconds=ttl_seconds, uses=uses).check()  # the request's own bounds
        ttl = timedelta(seconds=ttl_seconds)
        pin, address = await off_catalog(served_pin_and_address, state)
        endpoint = (endpoint or address or default_endpoint).strip().rstrip("/")
        if not endpoint:
            raise InvalidValue(
                "MasterSettings.config has no MasterAddress, so the token would not say where the master is",
                fix="packfleet settings set master MasterAddress https://HOST:PORT, or pass --endpoint URL",
            )
        try:
            parse_endpoint(endpoint)
        except PackfleetError as exc:
            raise InvalidValue(exc.message, fix="pass --endpoint https://HOST:PORT") from None
        agent_id = None
        if worker:
            agent_id = (await state.db(state.catalog.get_worker, worker)).agent_id
        token = new_join_token(endpoint, pin)
        record = await state.db(
            state.catalog.create_join_token,
            token.token_id,
            hash_secret(token.secret),
            expires_at=state.clock() + ttl,
            uses=uses,
            enable=enable,
            endpoint=endpoint,
            actor=actor,
        )
        if agent_id is not None:
            try:
                await state.db(state.catalog.bind_join_token, token.token_id, agent_id, actor=actor)
            except BaseException:
                # Nobody has seen the secret, but an unbound live token must not outlast the failure.
                await state.db(state.catalog.revoke_join_token, token.token_id, actor=actor)
                raise
        log.info(
            "join token %s created by %s (uses %d, expires %s)",
            record.token_id,
            actor,
            uses,
            record.expires_at,
        )
        return NewToken(record, token.encode(), pin, agent_id)

    async def list(self) -> list[tuple[JoinTokenRecord, TokenBinding]]:
        state = self._state
        records = await state.db(state.catalog.list_join_tokens)
        bindings = await state.db(state.catalog.join_token_bindings)
        return [(r, bindings.get(r.token_id, TokenBinding())) for r in records]

    async def revoke(self, token_id: str, *, actor: str) -> tuple[JoinTokenRecord, TokenBinding]:
        state = self._state
        record = await state.db(state.catalog.revoke_join_token, token_id, actor=actor)
        bindings = await state.db(state.catalog.join_token_bindings)
        return record, bindings.get(token_id, TokenBinding())

    def view(self, record: JoinTokenRecord, binding: TokenBinding) -> dict[str, Any]:
        return token_view(record, binding, self._state.clock())
