"""How manager commands reach the master: one ``ManagerClient`` per command, closed when it ends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from packfleet.cli._output import CliState
from packfleet.manager import ManagerClient

T = TypeVar("T")


def state() -> CliState:
    return click.get_current_context().ensure_object(CliState)


def call(action: Callable[[ManagerClient], Awaitable[T]]) -> T:
    """Run ``action`` with a client built from the global options, then the home's settings."""
    st = state()

    async def _run() -> T:
        client = ManagerClient.connect(st.home(), st.remote)
        try:
            return await action(client)
        finally:
            await client.close()

    return asyncio.run(_run())
