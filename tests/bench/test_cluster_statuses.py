"""The bench's status codes, written out for its SQL, are the protocol's: a status added to one and not
the other would make the bench wait out its timeout, or stop waiting early."""

from __future__ import annotations

from packfleet.bench._cluster import FINISHED, SUCCEEDED, UNFINISHED
from packfleet.protocol import FINISHED_EXECUTION, ExecutionStatus


def test_the_bench_sorts_every_execution_status_as_the_protocol_does() -> None:
    assert set(FINISHED) == {int(s) for s in FINISHED_EXECUTION}
    assert set(UNFINISHED) == {int(s) for s in ExecutionStatus} - set(FINISHED)
    assert SUCCEEDED == ExecutionStatus.SUCCEEDED
