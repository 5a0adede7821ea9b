"""Large logs and large fleets over plain HTTPS: the streamed downloads of a log and of the audit,
the windows of a huge log, the allowed workers of a large fleet, the dashboard's bounded counts."""

from __future__ import annotations

import csv
import io
import json

import pytest

from .conftest import Client, RunningMaster, Runs


def _lines(runs: Runs, agent_id: str, count: int) -> int:
    lease = runs.start(agent_id)
    for first in range(0, count, 500):
        runs.lines(lease, [f"line {i:05d}" for i in range(first + 1, min(first + 500, count) + 1)])
    runs.finish(lease)
    return lease.execution_id


def test_the_execution_log_downloads_as_text_and_json_lines_streamed(
    client: Client, master: RunningMaster, runs: Runs
) -> None:
    agent_id = master.add_worker("worker1")
    lease = runs.start(agent_id)
    runs.lines(lease, ["first", "=SUM(A1)", "two\nlines", "last"])
    client.sign_in("vera")
    text = client.get(f"/executions/{lease.execution_id}/log.txt")
    assert text.status == 200 and text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.headers["Content-Disposition"] == f'attachment; filename="execution-{lease.execution_id}.txt"'
    assert text.headers.get("Transfer-Encoding") == "chunked", "streamed, not built in memory"
    assert text.headers["Content-Security-Policy"].startswith("default-src 'none'")
    lines = text.body.splitlines()
    assert len(lines) == 5 and lines[0].endswith("attempt 1 information stdout: first")
    assert lines[3] == "    lines", "a message of several lines keeps them, indented"
    jsonl = client.get(f"/executions/{lease.execution_id}/log.jsonl")
    assert jsonl.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    rows = [json.loads(line) for line in jsonl.body.splitlines()]
    assert [r["message"] for r in rows] == ["first", "=SUM(A1)", "two\nlines", "last"]
    assert {r["execution_id"] for r in rows} == {lease.execution_id} and rows[0]["seq"] == 1
    assert client.get(f"/executions/{lease.execution_id}/log.csv").status == 404
    assert client.get("/executions/999999/log.txt").status == 404
    # Without a session: to the sign-in page, nothing downloaded.
    anonymous = Client(master).get(f"/executions/{lease.execution_id}/log.txt")
    assert anonymous.status == 302 and "first" not in anonymous.body


def test_a_long_log_downloads_whole_across_batches(client: Client, master: RunningMaster, runs: Runs) -> None:
    execution_id = _lines(runs, master.add_worker("worker1"), 2500)
    client.sign_in("vera")
    body = client.get(f"/executions/{execution_id}/log.jsonl").body
    assert [json.loads(line)["message"] for line in body.splitlines()] == [
        f"line {i:05d}" for i in range(1, 2501)
    ]


def test_the_audit_downloads_with_the_page_filters_as_csv_and_json_lines(
    client: Client, master: RunningMaster
) -> None:
    for i in range(3):
        master.db(
            master.catalog.audit, "console:otto", "worker.disable", f"w{i}", {"reason": "=HYPERLINK(1)"}
        )
    master.db(master.catalog.audit, "admin", "worker.enable", "w0")
    master.db(master.catalog.audit, "console:otto", "worker.disable", "=cmd|'/C calc'!A0")
    client.sign_in("vera")
    page = client.get("/audit?actor=console%3Aotto&action=worker")
    assert 'href="/audit/download.csv?actor=console%3Aotto&amp;action=worker"' in page.body
    answer = client.get("/audit/download.csv?actor=console%3Aotto&action=worker")
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(answer.body)))
    assert rows[0] == ["id", "time", "who", "what", "target", "details"]
    expected = [("console:otto", "worker.disable", f"w{i}") for i in range(3)]
    assert [(r[2], r[3], r[4]) for r in rows[1:4]] == expected
    assert json.loads(rows[1][5]) == {"reason": "=HYPERLINK(1)"}
    # A value a spreadsheet would run as a formula is written as text (a leading apostrophe).
    assert rows[4][4] == "'=cmd|'/C calc'!A0" and len(rows) == 5
    jsonl = client.get("/audit/download.jsonl?target=w0")
    found = [json.loads(line) for line in jsonl.body.splitlines()]
    assert [(r["actor"], r["action"]) for r in found] == [
        ("console:otto", "worker.disable"),
        ("admin", "worker.enable"),
    ]
    assert found[0]["details"] == {"reason": "=HYPERLINK(1)"}


def test_a_huge_log_shows_its_head_and_tail_windows_with_links_between(
    client: Client, master: RunningMaster, runs: Runs
) -> None:
    execution_id = _lines(runs, master.add_worker("worker1"), 3200)
    client.sign_in("vera")
    page = client.get(f"/executions/{execution_id}")
    assert page.status == 200 and "3200 messages." in page.body
    assert page.body.count('class="msg"') == 1000, "head and tail windows only"
    assert "line 00500<" in page.body and "line 00501<" not in page.body
    assert "line 02700<" not in page.body and "line 02701<" in page.body and "line 03200<" in page.body
    assert "2200 messages not shown" in page.body
    for n, first, final in ((2, 501, 1000), (6, 2501, 3000)):
        assert f'href="?window={n}">{first}–{final}</a>' in page.body
    window = client.get(f"/executions/{execution_id}?window=3")
    assert window.body.count('class="msg"') == 500
    assert "line 01001<" in window.body and "line 01500<" in window.body and "line 01501<" not in window.body
    assert 'data-live="false"' in window.body and "Messages 1001 to 1500 of 3200" in window.body
    last = client.get(f"/executions/{execution_id}?window=7")
    assert last.body.count('class="msg"') == 200 and "line 03200<" in last.body
    assert client.get(f"/executions/{execution_id}?window=8").status == 400
    assert client.get(f"/executions/{execution_id}?window=x").status == 400


def test_a_large_fleet_names_its_allowed_workers_in_a_text_box(
    client: Client, master: RunningMaster, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    from packfleet.console import _runs

    monkeypatch.setattr(_runs, "CHECKBOXES", 2)  # three workers count as a large fleet here
    agents = {name: master.add_worker(name) for name in ("etl-1", "etl-2", "etl-3")}
    client.sign_in("otto")
    page = client.get("/executions/new?target=default/etl/load")
    assert 'type="checkbox"' not in page.body and 'name="workers"' in page.body
    form = {"csrf_token": page.csrf, "target": "default/etl/load", "p.rows": "5"}
    dry = client.post("/executions/new", form | {"action": "dry-run", "workers": "etl-2\n" + agents["etl-3"]})
    assert dry.status == 200 and "2 of 3 workers could take it now" in dry.body
    assert "etl-2\netl-3\n</textarea>" in dry.body, "the allowed workers are kept, by name"
    refused = client.post("/executions/new", form | {"action": "run", "workers": "etl-9"})
    assert refused.status == 400 and "no worker has the name or agent id &#39;etl-9&#39;" in refused.body
    ran = client.post("/executions/new", form | {"action": "run", "workers": "etl-1, etl-2"})
    assert ran.status == 303
    execution_id = int(ran.headers["Location"].split("/")[2].split("?")[0])
    record = master.db(master.catalog.get_execution, execution_id)
    assert set(record.allowed_workers) == {agents["etl-1"], agents["etl-2"]}


def test_the_dashboard_counts_up_to_its_cap_and_says_more_than(
    client: Client, master: RunningMaster, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    from packfleet.console import _pages

    monkeypatch.setattr(_pages, "COUNT_CAP", 2)
    for _ in range(3):
        master.db(
            master.catalog.create_execution, "default", "etl", "load", parameters={"rows": 1}, actor="admin"
        )
    client.sign_in("vera")
    page = client.get("/")
    assert 'class="big">more than 2</p>' in page.body and "tasks waiting; the oldest since" in page.body
    assert "<li>pending: more than 2</li>" in page.body
    monkeypatch.setattr(_pages, "COUNT_CAP", 10_000)
    page = client.get("/")
    assert 'class="big">3</p>' in page.body and "<li>pending: 3</li>" in page.body
