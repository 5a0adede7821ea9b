"""The spawn scenario's floor: a fork server's bare fork and exit, measured in a process of its own."""

from __future__ import annotations

from packfleet.bench._spawn import _fork_floor_samples


def test_the_fork_floor_times_each_fork_and_exit_it_was_asked_for() -> None:
    samples = _fork_floor_samples(5)
    assert len(samples) == 5
    assert all(0 < sample < 10_000 for sample in samples)  # milliseconds: reaped, not hung
