"""``packfleet run --wait``'s requests: the run answered with the first page, the follow only if needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from packfleet.cli import main
from packfleet.manager import ManagerClient
from packfleet.protocol import EventPage, PendingExplanation


def _execution(status: int) -> dict[str, Any]:
    return {"execution_id": 7, "folder": "default", "project": "etl", "package": "load", "status": status}


def _page(status: int, *lines: str, first_id: int = 1, finished: bool = False) -> EventPage:
    events = [
        {
            "id": first_id + n,
            "execution_id": 7,
            "message": line,
            "message_source": "stdout",
            "message_time": "2024-06-01T12:00:00.000000+00:00",
        }
        for n, line in enumerate(lines)
    ]
    last = events[-1]["id"] if events else first_id - 1
    wire = {"execution": _execution(status), "events": events, "last_id": last, "finished": finished}
    return EventPage.from_wire(wire)


class FakeClient:
    """The manager client as ``run --wait`` uses it: answers given in advance, requests recorded."""

    def __init__(self, first: EventPage, follow: list[EventPage]) -> None:
        self.first = first
        self.follow = follow
        self.calls: list[tuple[str, Any]] = []

    async def run_waiting(self, *args: Any, wait: float, **kwargs: Any) -> EventPage:
        self.calls.append(("run_waiting", (wait, bool(kwargs["idempotency_key"]))))
        return self.first

    async def events(self, execution_id: int, after_id: int = 0, wait: float = 0.0) -> EventPage:
        self.calls.append(("events", after_id))
        return self.follow.pop(0)

    async def pending(self, execution_id: int) -> PendingExplanation:
        self.calls.append(("pending", execution_id))
        return PendingExplanation.from_wire(
            {"execution_id": 7, "status": "pending", "pending": True, "reasons": ["worker1 is busy"]}
        )

    async def close(self) -> None:
        pass


def _run_wait(
    fake: FakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any], str]:
    monkeypatch.setattr(ManagerClient, "connect", classmethod(lambda cls, *a, **k: fake))
    code = main(["--home", str(tmp_path), "run", "default/etl/load", "--wait", "--json"])
    out, err = capsys.readouterr()
    assert out, err
    return code, json.loads(out), err


def test_a_run_ended_within_its_first_answer_takes_one_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeClient(_page(7, "line 1", "line 2", finished=True), follow=[])
    code, shown, err = _run_wait(fake, tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert shown["execution_id"] == 7 and shown["status"] == 7
    # The first page is what a follow's first turn asks for (3 s: a pending run's reasons are due).
    assert fake.calls == [("run_waiting", (3.0, True))]


def test_a_run_still_pending_in_its_first_answer_is_explained_and_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    follow = [_page(2, "line 1"), _page(7, "line 2", first_id=2, finished=True)]
    fake = FakeClient(_page(5), follow)
    code, shown, err = _run_wait(fake, tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert shown["status"] == 7
    assert fake.calls == [("run_waiting", (3.0, True)), ("pending", 7), ("events", 0), ("events", 1)]
    assert "pending: worker1 is busy" in err


def test_a_full_last_page_is_followed_for_the_events_behind_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = _page(7, *(f"line {n}" for n in range(1, 1001)), finished=True)
    fake = FakeClient(full, follow=[_page(7, "line 1001", first_id=1001, finished=True)])
    code, _, err = _run_wait(fake, tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert fake.calls == [("run_waiting", (3.0, True)), ("events", 1000)]
