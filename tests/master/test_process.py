"""`packfleet master run` as a real process: logs its port, reloads on SIGHUP, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from master.support import MasterHome, context_for
from packfleet.protocol import routes


async def read_until(
    stream: asyncio.StreamReader, pattern: str, seen: list[str], timeout: float = 30
) -> re.Match[str]:
    """Read log lines until one matches ``pattern`` (bounded in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (remaining := deadline - loop.time()) > 0:
        line = (await asyncio.wait_for(stream.readline(), remaining)).decode()
        if not line:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no log line matched {pattern!r}; got:\n{''.join(seen)}")


async def test_master_run_serves_reloads_on_sighup_and_stops_gracefully_on_sigterm(
    mh: MasterHome, tmp_path: Path
) -> None:
    env = dict(os.environ, PACKFLEET_LOG_LEVEL="INFO")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "packfleet",
        "--home",
        str(mh.home),
        "master",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stderr is not None
    seen: list[str] = []
    try:
        started = await read_until(process.stderr, r"master started on 127\.0\.0\.1:(\d+)", seen)
        port = int(started.group(1))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context_for(None, mh, tmp_path))
        writer.write(f"GET {routes.HEALTH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
        writer.close()

        process.send_signal(signal.SIGHUP)
        await read_until(process.stderr, rf"reloaded: serving certificate {mh.master.thumbprint}", seen)

        process.send_signal(signal.SIGTERM)
        await read_until(process.stderr, r"master stopped", seen)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
