"""The Celery peer's group join: a client-side hang is told apart from Celery not running the tasks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout

from packfleet.bench._celery_peer import CeleryPeer, MissedResults, join
from packfleet.bench._peer_tls import PeerTls
from packfleet.errors import ClusterError


class _Group:
    """A GroupResult whose native join times out, with ``done`` of ``total`` results stored."""

    def __init__(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def get(self, timeout: float) -> None:
        raise CeleryTimeout("The operation timed out.")

    def completed_count(self) -> int:
        return self.done

    def __len__(self) -> int:
        return self.total


def test_a_join_that_waits_for_stored_results_is_a_missed_join() -> None:
    with pytest.raises(MissedResults, match="20 results stored already"):
        join(_Group(20, 20), timeout=1, worker_log=lambda: "")


def test_results_missing_say_how_many_ran_with_the_workers_log() -> None:
    with pytest.raises(ClusterError, match="Celery ran 3 of 20 no-op tasks") as raised:
        join(_Group(3, 20), timeout=1, worker_log=lambda: "[ERROR] worker lost")
    assert "[ERROR] worker lost" in raised.value.message


def test_a_round_whose_join_missed_its_results_is_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    peer = CeleryPeer(tmp_path, PeerTls(tmp_path / "tls"))
    outcomes: list[MissedResults | tuple[float, float]] = [
        MissedResults("its join waited 60 s for 20 results stored already"),
        (400.0, 3.0),
    ]

    def measured(n: int) -> tuple[float, float]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, MissedResults):
            raise outcome
        return outcome

    monkeypatch.setattr(peer, "_throughput", measured)
    with caplog.at_level(logging.WARNING, "packfleet.bench"):
        assert peer.throughput(20) == (400.0, 3.0)
    assert "measuring this round again" in caplog.text and outcomes == []
    outcomes[:] = [MissedResults("again"), MissedResults("and again")]
    with pytest.raises(MissedResults, match="and again"):
        peer.throughput(20)  # once, not forever
