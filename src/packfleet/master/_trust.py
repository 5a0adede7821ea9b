"""The master's Root store as the handshake sees it: add, remove, cut off, and serve the change.

The seed's procedures install a worker certificate "into the Root store of the master machine"; the
master then has to *serve* that store, i.e. rebuild the TLS context new handshakes use. A route that
answers "added" while the reload failed would leave the worker refused in the handshake with nothing
pointing at why, so adding trust fails loudly (503 with the reload's own reason). Removing trust is
already enforced by the catalog (a retired or revoked certificate is refused on every route), so a
failed reload after a removal is only logged by :meth:`MasterServer.reload`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from packfleet.catalog import TRUST_CHANNEL
from packfleet.errors import CertificateNotFound, PackfleetError
from packfleet.master._problems import Problem
from packfleet.master._state import MasterState, off_catalog
from packfleet.pki import CertStore, Credential

log = logging.getLogger("packfleet.master")

_RELOAD_FIX = "packfleet doctor (on the master), mend what it reports, then: kill -HUP <master pid>"


async def trust_in_root(state: MasterState, public: Credential, *, actor: str) -> None:
    """Install a worker certificate into the master's Root store and serve the new trust at once.

    Raises a 503 :class:`Problem` when the master cannot reload its TLS material: the certificate
    is in the store, but handshakes do not trust it until a reload succeeds.
    """
    # A store file, not the catalog: off the catalog's executor (SQLite has one thread).
    await off_catalog(CertStore(state.home, "Root").add, public)
    state.principals.invalidate([public.thumbprint])
    # The other masters of a shared catalog add it to their Root stores too (see _sharedtrust).
    await state.db(state.catalog.notify_masters, TRUST_CHANNEL)
    log.info("certificate %s added to the Root store by %s", public.thumbprint, actor)
    try:
        await state.reload_trust()
    except PackfleetError as exc:
        raise Problem(
            503,
            "trust-not-reloaded",
            f"certificate {public.thumbprint} is in the master's Root store, but the master could not "
            f"reload its TLS trust, so handshakes do not accept it yet: {exc.message}",
            thumbprint=public.thumbprint,
            fix=exc.fix or _RELOAD_FIX,
        ) from None


async def remove_from_root(state: MasterState, thumbprints: list[str]) -> list[str]:
    """Delete ``thumbprints`` from the master's Root store; return those that were there.

    The files go on a thread of their own; then the catalog tells the other masters of a shared
    catalog, which drop them too.
    """
    removed = await off_catalog(_delete_from_root, state.home, thumbprints)
    if thumbprints:
        await state.db(state.catalog.notify_masters, TRUST_CHANNEL)
    return removed


def _delete_from_root(home: Path, thumbprints: list[str]) -> list[str]:
    store = CertStore(home, "Root")
    removed = []
    for thumbprint in thumbprints:
        try:
            store.delete(thumbprint)
        except CertificateNotFound:
            continue
        removed.append(thumbprint)
    return removed


async def reload_after_removal(state: MasterState) -> None:
    """Serve a Root store that lost certificates; a refused reload is logged, not raised.

    The catalog already refuses the removed certificates, so the answer to the administrator stays
    true; the reload only stops their handshakes early.
    """
    try:
        await state.reload_trust()
    except PackfleetError:
        log.warning("the Root store changed but the TLS trust was not reloaded; see the error above")


def cut_off(state: MasterState, thumbprints: list[str], why: str) -> None:
    """Close the open connections of ``thumbprints`` here and, through the catalog, on every master.

    Session tickets are off, so none resumes. The other masters of a shared catalog hear it through
    ``NOTIFY packfleet_cutoff`` and close theirs within moments (see ``_coordination``).
    """
    closed = state.connections.close(thumbprints)
    if closed:
        log.info("%s: closed %d open connection(s)", why, closed)
    if not thumbprints:
        return

    async def tell_the_others() -> None:
        try:
            await state.db(state.catalog.notify_cutoff, thumbprints)
        except PackfleetError as exc:
            log.warning("%s: the other masters were not told to close its connections: %s", why, exc.message)

    task = asyncio.get_running_loop().create_task(tell_the_others())
    state.background.add(task)
    task.add_done_callback(state.background.discard)


def close_cut_off(state: MasterState, thumbprints: list[str]) -> None:
    """Another master cut these certificates off: forget their authorization, close their connections."""
    state.principals.invalidate(thumbprints)
    closed = state.connections.close(thumbprints)
    if closed:
        log.info(
            "cut off on another master: closed %d open connection(s) of %s", closed, ", ".join(thumbprints)
        )
