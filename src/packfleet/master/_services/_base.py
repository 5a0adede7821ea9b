"""What every service stands on: the master's state, and where work that is not the catalog's runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

# Defined beside MasterState.db, so that the trust helpers the services stand on use it too.
from packfleet.master._state import MasterState, off_catalog

P = ParamSpec("P")
T = TypeVar("T")


class CatalogOnlyState:
    """A view of :class:`MasterState` whose ``db`` sends only the catalog's own methods to the
    catalog's executor, and everything else to :func:`off_catalog`.

    For code written against ``state.db`` for all its blocking work (the master certificate
    rotation: catalog reads and writes, but also key generation and binding, settings and store
    files), so its file work no longer queues on the catalog's one SQLite thread. Every other
    attribute is the real state's.
    """

    def __init__(self, state: MasterState) -> None:
        self._state = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    async def db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if getattr(call, "__self__", None) is self._state.catalog:
            return await self._state.db(call, *args, **kwargs)
        return await off_catalog(call, *args, **kwargs)


__all__ = ["CatalogOnlyState", "off_catalog"]
