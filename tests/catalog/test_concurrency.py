"""Two threads leasing at once never get the same task (SKIP LOCKED on PostgreSQL, BEGIN
IMMEDIATE on SQLite), and a shared Catalog is safe across threads."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from packfleet.catalog import Catalog, ExecutionRequest, TaskAssignment

ROUNDS = 25


def test_two_threads_leasing_at_once_never_share_a_task(
    deployed: Catalog, worker: Callable[..., str]
) -> None:
    agents = [worker("one"), worker("two")]
    request = ExecutionRequest("default", "etl", "extract")
    deployed.create_executions([request] * (ROUNDS * len(agents)), actor="bulk")
    # Both threads leave the barrier together every round, so every round is a real race.
    together = threading.Barrier(len(agents), timeout=30)
    leased: dict[str, list[TaskAssignment]] = {agent: [] for agent in agents}
    errors: list[BaseException] = []

    def lease(agent: str) -> None:
        try:
            for _ in range(ROUNDS):
                together.wait()
                leased[agent].extend(deployed.lease_tasks(agent, 1, 60))
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            together.abort()

    threads = [threading.Thread(target=lease, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    counts = Counter(t.task_id for got in leased.values() for t in got)
    assert set(counts.values()) == {1}, "a task was leased twice"
    assert len(counts) == ROUNDS * len(agents)
    assert [len(got) for got in leased.values()] == [ROUNDS, ROUNDS]
