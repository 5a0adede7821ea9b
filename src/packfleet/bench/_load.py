"""Load generators that run in their own processes (a single Python client would be the limit).

They are started with the ``spawn`` method: a clean interpreter, no copy of the parent's event loop
or database connections. Every generator waits for a common wall-clock start so that all of them
measure the same window.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from typing import Any


def run_processes(target: Callable[..., None], args_list: list[tuple[Any, ...]], timeout: float) -> list[Any]:
    """Run ``target(queue, *args)`` in one process per ``args``; return what each put on the queue."""
    context = multiprocessing.get_context("spawn")
    queue: Queue[Any] = context.Queue()
    processes = [context.Process(target=target, args=(queue, *args), daemon=True) for args in args_list]
    for process in processes:
        process.start()
    answers = []
    try:
        for _ in processes:
            answers.append(queue.get(timeout=timeout))
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
    failures = [a for a in answers if isinstance(a, str)]
    if failures:
        raise RuntimeError(f"a load generator failed: {failures[0]}")
    return answers


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


def health_load(queue: Queue[Any], home: str, concurrency: int, start_at: float, seconds: float) -> None:
    """Keep ``concurrency`` keep-alive mTLS requests to ``/api/v1/health`` in flight; put the count."""
    from pathlib import Path

    from packfleet.manager import ManagerClient
    from packfleet.protocol import routes

    async def main() -> int:
        manager = ManagerClient.from_home(Path(home))
        manager.client._connections = concurrency  # one keep-alive connection per loop
        try:
            await asyncio.gather(*(manager.client.request("GET", routes.HEALTH) for _ in range(concurrency)))
            await _sleep_until(start_at)
            end = start_at + seconds
            counts = [0] * concurrency

            async def loop(i: int) -> None:
                while time.time() < end:
                    await manager.client.request("GET", routes.HEALTH)
                    counts[i] += 1

            await asyncio.gather(*(loop(i) for i in range(concurrency)))
            return sum(counts)
        finally:
            await manager.close()

    try:
        queue.put(asyncio.run(main()))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        queue.put(f"{type(exc).__name__}: {exc}")
