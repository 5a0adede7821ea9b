"""Disable, revoke and delete end a worker's open keep-alive connections at once; stop is graceful."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from master.support import MasterHome, context_for, heartbeat_body, new_agent_id
from packfleet.errors import TransportError
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import Credential
from packfleet.protocol import routes
from packfleet.transport import MasterClient

Connect = Callable[[Credential | None], MasterClient]


class KeepAlive:
    """One raw HTTP/1.1 keep-alive connection, so a test can see the master close it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, ctx: ssl.SSLContext, port: int) -> KeepAlive:
        return cls(*await asyncio.open_connection("127.0.0.1", port, ssl=ctx))

    async def post(self, path: str, body: object) -> int:
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


async def registered(mh: MasterHome, manager: ManagerClient, connect: Connect, *, enable: bool) -> str:
    agent = new_agent_id()
    await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    if enable:
        await manager.enable_worker(agent)
    return agent


@pytest.mark.parametrize("action", ["disable", "revoke", "delete"])
async def test_an_open_keep_alive_connection_is_closed(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    action: str,
) -> None:
    agent = await registered(mh, manager, connect, enable=True)
    conn = await KeepAlive.open(context_for(mh.worker, mh, tmp_path), server.port)
    try:
        assert await conn.post(routes.WORKER_HEARTBEAT, heartbeat_body(agent)) == 200
        assert server.state.connections.count(mh.worker.thumbprint) >= 1
        if action == "disable":
            await manager.disable_worker(agent)
        elif action == "revoke":
            await manager.revoke_certificate(mh.worker.thumbprint)
        else:
            await manager.delete_worker(agent)
        assert await conn.closed_by_peer()
    finally:
        conn.close()


async def test_a_worker_disabled_while_it_long_polls_gets_no_task(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    agent = await registered(mh, manager, connect, enable=True)
    worker = connect(mh.worker)
    ask = {"agent_id": agent, "capacity": 1, "wait_seconds": 20, "lease_seconds": 60}
    waiting = asyncio.create_task(worker.request("POST", routes.WORKER_LEASE, json_body=ask))
    await asyncio.sleep(0.3)
    await manager.disable_worker(agent)
    with pytest.raises(TransportError, match="closed the connection"):
        await asyncio.wait_for(waiting, 5)


async def test_stop_answers_waiting_long_polls_and_finishes(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    agent = await registered(mh, manager, connect, enable=True)
    worker = connect(mh.worker)
    ask = {"agent_id": agent, "capacity": 1, "wait_seconds": 25, "lease_seconds": 60}
    waiting = asyncio.create_task(worker.request("POST", routes.WORKER_LEASE, json_body=ask))
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop()
    assert await asyncio.wait_for(waiting, 5) == {"tasks": []}
    assert loop.time() - started < 5
