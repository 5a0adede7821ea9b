"""The Certificates page's rotation steps, the downloads and the log windows over plain HTTPS:
who may rotate, CSRF, the audit trail with the user's name, and what each download holds."""

from __future__ import annotations

import csv
import io
import json

import pytest

from master.support import write_manager_settings
from packfleet.config import load_manager_settings
from packfleet.console import _rotation

from .conftest import Client, RunningMaster, Runs


@pytest.mark.parametrize("name", ["vera", "otto"])
def test_only_an_admin_may_take_a_rotation_step(client: Client, master: RunningMaster, name: str) -> None:
    client.sign_in(name)
    page = client.get("/certificates")
    assert page.status == 200 and "Start rotation" not in page.body, "the button is for admins only"
    for step in _rotation.STEPS:
        refused = client.post("/certificates/rotation", {"step": step, "csrf_token": page.csrf})
        assert refused.status == 403, step
        assert "needs the admin role" in refused.body
    assert master.server.state.rotation is not None and master.server.state.rotation.record is None
    assert master.db(master.catalog.list_audit, action="master-cert") == []


def test_a_rotation_step_without_the_csrf_token_or_from_another_site_is_refused(
    client: Client, master: RunningMaster
) -> None:
    client.sign_in("ada")
    page = client.get("/certificates")
    assert client.post("/certificates/rotation", {"step": "start"}).status == 403
    assert client.post("/certificates/rotation", {"step": "start", "csrf_token": "forged"}).status == 403
    cross = client.post(
        "/certificates/rotation",
        {"step": "start", "csrf_token": page.csrf},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status == 403 and "cross-site" in cross.body
    assert master.server.state.rotation is not None and master.server.state.rotation.record is None
    unknown = client.post("/certificates/rotation", {"step": "reboot", "csrf_token": page.csrf})
    assert unknown.status == 400 and "not one of start, switch, finish, abort" in unknown.body


def test_an_admin_starts_and_aborts_a_rotation_audited_under_her_name(
    client: Client, master: RunningMaster
) -> None:
    agent_id = master.add_worker("worker1")
    write_manager_settings(master.mh, master.server)  # the administrator's manager in the master's home
    client.sign_in("ada")
    page = client.get("/certificates")
    assert "No rotation under way" in page.body and "Start rotation" in page.body
    served = master.server.serving_thumbprint
    started = client.post("/certificates/rotation", {"step": "start", "csrf_token": page.csrf})
    assert started.status == 303 and started.headers["Location"] == "/certificates?done=started#rotation"
    record = master.server.state.rotation.record  # type: ignore[union-attr]
    assert record is not None and record.phase == "announced" and record.old == served
    # The manager of the master's home pins the next certificate beside the current one, as the CLI does.
    pinned = load_manager_settings(master.mh.home)
    assert (pinned.master_https_cert_thumbprint, pinned.next_master_https_cert_thumbprint) == (
        served,
        record.new,
    )
    shown = client.get("/certificates?done=started")
    assert "Rotation started." in shown.body and record.new in shown.body
    # The new certificate is in the inventory at once (a standby master certificate): the cache
    # was rebuilt after the step.
    assert shown.body.count(record.new) >= 2
    section = client.get("/certificates/rotation")
    assert section.status == 200 and 'data-follow="/certificates/rotation"' in section.body
    assert (
        f'data-agent="{agent_id}"' in section.body
        and "not heard from since the rotation started" in section.body
    )
    assert "0 of 1 accept the new certificate" in section.body
    # Switching while an online worker does not accept it yet is refused, and nothing changes.
    refused = client.post("/certificates/rotation", {"step": "switch", "csrf_token": page.csrf})
    assert refused.status == 409 and "do not accept certificate" in refused.body
    assert master.server.serving_thumbprint == served
    aborted = client.post("/certificates/rotation", {"step": "abort", "csrf_token": page.csrf})
    assert aborted.status == 303
    assert master.server.state.rotation.record is None  # type: ignore[union-attr]
    assert record.new not in client.get("/certificates").body, "the aborted certificate left the Root store"
    assert load_manager_settings(master.mh.home).next_master_https_cert_thumbprint == ""
    steps = master.db(master.catalog.list_audit, action="master-cert")
    assert [(a.actor, a.action, a.target) for a in steps] == [
        ("console:ada", "master-cert.rotation.start", record.new),
        ("console:ada", "master-cert.rotation.abort", record.new),
    ]
    assert client.post("/certificates/rotation", {"step": "abort", "csrf_token": page.csrf}).status == 409


def test_the_certificate_inventory_is_built_once_until_something_changes(
    client: Client, master: RunningMaster
) -> None:
    from packfleet.console._inventory import INVENTORY

    client.sign_in("vera")
    inventory = master.server._console._runner.app[INVENTORY]  # type: ignore[union-attr]
    client.get("/certificates")
    client.get("/")
    built = inventory.builds
    for _ in range(3):
        assert client.get("/certificates").status == 200
    assert inventory.builds == built, "no change, no rebuild"
    agent_id = master.add_worker("late-worker")  # audited: certificate.add
    page = client.get("/certificates")
    assert inventory.builds == built + 1 and f"/workers/{agent_id}" in page.body


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
