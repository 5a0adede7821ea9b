"""The stranger's side of the ``idle`` bench: hold many certificate-less connections to a master.

Run as its own process (``python -m packfleet.bench._holder --port P --master-pem F --connections
N``) so that its event loop is not the measuring client's; it prints one JSON line a second
(``open``, ``peak``, ``opened``, ``closed_by_master``, ``failed``) and stops when stdin closes.
Half of the connections finish the TLS handshake and send nothing; the other half send the start of
a request and then one header byte a second (slowloris). Each connection the master closes is
reopened at once, as a persistent attacker would. Not imported by :mod:`packfleet.bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: Connections per loopback source address, below the default MaxConnectionsPerAddress (128).
PER_SOURCE = 50


@dataclass
class HolderStats:
    open: int = 0
    peak: int = 0
    opened: int = 0
    closed_by_master: int = 0
    failed: int = 0


def sources(count: int, per_source: int = PER_SOURCE, prefix: str = "127.0.200.") -> list[str]:
    """``count`` connections' source addresses, ``per_source`` each: 127.0.200.1, .2, ..."""
    return [f"{prefix}{1 + i // per_source}" for i in range(count)]


async def _hold_one(
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    source: str,
    slow: bool,
    stats: HolderStats,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=host, local_addr=(source, 0)), 30
            )
        except (OSError, ssl.SSLError, TimeoutError):
            stats.failed += 1
            await asyncio.sleep(0.5)
            continue
        stats.opened += 1
        stats.open += 1
        stats.peak = max(stats.peak, stats.open)
        try:
            if slow:
                writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: ")
            while not stop.is_set():
                if slow:
                    writer.write(b"x")  # one header byte a second: slowloris
                try:
                    if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                        stats.closed_by_master += 1
                        break
                except TimeoutError:
                    continue
        except (OSError, ssl.SSLError):
            stats.closed_by_master += 1
        finally:
            stats.open -= 1
            writer.transport.abort()


async def hold(
    host: str, port: int, master_pem: str, count: int, stop: asyncio.Event, out: IO[str] | None = None
) -> HolderStats:
    """Keep ``count`` certificate-less connections open until ``stop``; report each second to ``out``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=master_pem)
    stats = HolderStats()
    tasks = [
        asyncio.create_task(_hold_one(host, port, ctx, source, i % 2 == 1, stats, stop))
        for i, source in enumerate(sources(count))
    ]
    while not stop.is_set():
        if out is not None:
            out.write(json.dumps(stats.__dict__) + "\n")
            out.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m packfleet.bench._idle")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--master-pem", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long at most")
    args = parser.parse_args(argv)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Stop when the parent closes stdin (or dies), or after --seconds.
        loop.add_reader(sys.stdin.fileno(), stop.set)
        loop.call_later(args.seconds, stop.set)
        await hold(args.host, args.port, args.master_pem.read_text(), args.connections, stop, sys.stdout)

    asyncio.run(main())


if __name__ == "__main__":
    _main()
