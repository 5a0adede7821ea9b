"""The Certificates page's rotation, the downloads and the log windows, in Chromium.

The rotation here runs on an in-process master with a worker known to the catalog; its heartbeat is
the master's own heartbeat hook, called as the worker route calls it. The full rotation with real
worker processes is in test_browser_rotation.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from packfleet.protocol import HeartbeatReply

from .conftest import NEEDS_CHROMIUM, RunningMaster, Runs, sign_in_page, wait_until

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]


def _heartbeat(master: RunningMaster, agent_id: str, accepted: list[str]) -> None:
    """What the worker route does with a heartbeat that reports the certificates it accepts."""
    rotation = master.rotation()
    reply = HeartbeatReply("enabled", "", "", agent_id)
    master.loop.call_soon_threadsafe(rotation.on_heartbeat, agent_id, accepted, reply)


def test_the_page_follows_a_started_rotation_and_an_admin_aborts_it(
    master: RunningMaster, page: Page, console_errors: list[str]
) -> None:
    agent_id = master.add_worker("etl-1")
    sign_in_page(page, master, "ada", "/certificates")
    section = page.locator("#rotation")
    expect(section).to_contain_text("No rotation under way")
    page.get_by_role("button", name="Start rotation").click()
    expect(section).to_contain_text("Rotation started.")
    record = master.rotation().record
    assert record is not None
    row = page.locator(f'#rotation-workers tr[data-agent="{agent_id}"]')
    expect(row).to_contain_text("not heard from since the rotation started")
    expect(page.locator("#rotation-progress")).to_have_text("0 of 1 accept the new certificate")
    # The worker accepts the new certificate: the page shows it without a reload.
    page.evaluate("window.notReloaded = true")
    _heartbeat(master, agent_id, [record.old, record.new])
    expect(row).to_contain_text("accepts the new certificate", timeout=15_000)
    expect(page.locator("#rotation-progress")).to_have_text("1 of 1 accept the new certificate")
    assert page.evaluate("window.notReloaded") is True
    page.get_by_role("button", name="Abort rotation").click()
    expect(section).to_contain_text("Rotation aborted.")
    expect(section).to_contain_text("No rotation under way")
    assert master.rotation().record is None
    audit = master.db(master.catalog.list_audit, action="master-cert")
    assert [(a.actor, a.action) for a in audit] == [
        ("console:ada", "master-cert.rotation.start"),
        ("console:ada", "master-cert.rotation.abort"),
    ]
    assert console_errors == []


def test_a_viewer_follows_the_rotation_but_sees_no_step(master: RunningMaster, page: Page) -> None:
    master.add_worker("etl-1")
    rotation = master.rotation()
    master.run(rotation.advance("start", actor="admin"))
    sign_in_page(page, master, "vera", "/certificates")
    expect(page.locator("#rotation-phase")).to_contain_text("announced")
    for name in ("Start rotation", "Switch to the new certificate", "Abort rotation"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    master.run(rotation.advance("abort", actor="admin"))
    expect(page.locator("#rotation")).to_contain_text("No rotation under way", timeout=15_000)


def test_the_log_and_the_audit_download_from_their_pages(
    master: RunningMaster, runs: Runs, page: Page, tmp_path: Path
) -> None:
    agent_id = master.add_worker("etl-1")
    lease = runs.start(agent_id)
    runs.lines(lease, ["extract started", "loaded 10 rows"])
    runs.finish(lease)
    sign_in_page(page, master, "otto", f"/executions/{lease.execution_id}")
    with page.expect_download() as text:
        page.get_by_role("link", name="Download as text").click()
    assert text.value.suggested_filename == f"execution-{lease.execution_id}.txt"
    lines = Path(text.value.path()).read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["extract started", "loaded 10 rows"]
    with page.expect_download() as jsonl:
        page.get_by_role("link", name="Download as JSON lines").click()
    rows = [json.loads(line) for line in Path(jsonl.value.path()).read_text().splitlines()]
    assert [r["message"] for r in rows] == ["extract started", "loaded 10 rows"]

    master.db(master.catalog.audit, "console:otto", "worker.disable", agent_id, {"reason": "disk"})
    master.db(master.catalog.audit, "admin", "worker.enable", agent_id)
    page.goto(master.url + "/audit")
    page.get_by_label("Who").fill("console:otto")
    page.get_by_label("What").fill("worker")  # not otto's own sign-in
    page.get_by_role("button", name="Filter").click()
    with page.expect_download() as audit:
        page.get_by_role("link", name="Download as CSV").click()
    assert audit.value.suggested_filename == "audit.csv"
    with open(audit.value.path(), newline="") as handle:
        table = list(csv.reader(handle))
    assert [(r[2], r[3], r[4]) for r in table[1:]] == [("console:otto", "worker.disable", agent_id)]


def test_a_huge_log_opens_on_its_head_and_tail_and_a_window_in_between(
    master: RunningMaster, runs: Runs, page: Page, console_errors: list[str]
) -> None:
    lease = runs.start(master.add_worker("etl-1"))
    for first in range(1, 1600, 400):
        runs.lines(lease, [f"line {i:04d}" for i in range(first, first + 400)])
    sign_in_page(page, master, "vera", f"/executions/{lease.execution_id}")
    messages = page.locator("#events td.msg")
    expect(messages).to_have_count(1000)
    expect(page.locator("#gap")).to_contain_text("600 messages not shown")
    expect(messages.nth(499)).to_have_text("line 0500")
    expect(messages.nth(500)).to_have_text("line 1101")
    # The live tail goes on after the tail window: a new line arrives without a reload.
    runs.lines(lease, ["line 1601"])
    expect(messages.last).to_have_text("line 1601", timeout=15_000)
    page.get_by_role("link", name="501–1000").click()
    expect(page.locator("#window")).to_contain_text("Messages 501 to 1000 of 1601")
    expect(messages).to_have_count(500)
    expect(messages.first).to_have_text("line 0501")
    expect(page.locator("#live")).to_have_count(0)
    page.get_by_label("Window (1 to 4, 500 messages each)").fill("4")
    page.get_by_role("button", name="Show window").click()
    expect(messages).to_have_count(101)
    expect(messages.last).to_have_text("line 1601")
    page.get_by_role("link", name="First and last messages, live").click()
    expect(messages).to_have_count(1000)
    wait_until(lambda: not console_errors, what="no script error")
    assert console_errors == []
