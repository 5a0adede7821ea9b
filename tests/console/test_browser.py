"""The console in Debian's Chromium, driven by Playwright: what a person sees and does.

Skipped only when the ``chromium`` binary is missing (``apt-get install -y chromium``); CI installs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from playwright.sync_api import Browser, Page, expect

from master.support import write_manager_settings

from .conftest import NEEDS_CHROMIUM, PASSWORDS, RunningMaster, Runs, sign_in_page, wait_until

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]


def test_sign_in_then_every_page_from_the_menu(
    master: RunningMaster, page: Page, console_errors: list[str]
) -> None:
    master.add_worker("etl-1")
    page.goto(master.url + "/workers")
    expect(page).to_have_url(master.url + "/login?next=/workers")
    page.get_by_label("User name").fill("vera")
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    page.get_by_label("Password").fill(PASSWORDS["vera"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(master.url + "/workers")
    expect(page.get_by_role("link", name="etl-1")).to_be_visible()
    for link, heading in (
        ("Dashboard", "Dashboard"),
        ("Executions", "Executions"),
        ("Certificates", "Certificates"),
        ("Audit", "Audit log"),
    ):
        page.get_by_role("navigation", name="Main").get_by_role("link", name=link).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(master.url + "/login")
    page.goto(master.url + "/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert console_errors == []


def test_disabling_a_worker_in_the_page_is_what_the_cli_sees(master: RunningMaster, page: Page) -> None:
    agent_id = master.add_worker("etl-1")
    write_manager_settings(master.mh, master.server)
    sign_in_page(page, master, "otto", "/workers")
    page.get_by_role("link", name="etl-1").click()
    page.get_by_label("Reason").fill("replacing its disk")
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("status")).to_have_text("Worker disabled.")
    expect(page.get_by_text("online, disabled")).to_be_visible()
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "packfleet",
            "--home",
            str(master.mh.home),
            "manager",
            "worker",
            "list",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [worker] = json.loads(listed.stdout)
    assert (worker["agent_id"], worker["is_enabled"]) == (agent_id, False)
    page.get_by_role("button", name="Enable").click()
    expect(page.get_by_role("status")).to_have_text("Worker enabled.")
    assert master.db(master.catalog.get_worker, agent_id).is_enabled


def test_a_viewer_is_refused_and_a_change_without_the_token_is_refused(
    master: RunningMaster, page: Page
) -> None:
    agent_id = master.add_worker("etl-1")
    sign_in_page(page, master, "vera", f"/workers/{agent_id}")
    expect(page.get_by_role("button", name="Disable")).to_have_count(0)
    post = """async ([path, withToken]) => {
        const token = document.querySelector('meta[name="csrf-token"]').content;
        const body = new URLSearchParams({reason: "forged"});
        if (withToken) { body.set("csrf_token", token); }
        const answer = await fetch(path, {method: "POST", body});
        return [answer.status, await answer.text()];
    }"""
    status, text = page.evaluate(post, [f"/workers/{agent_id}/disable", True])
    assert status == 403 and "needs the operator role" in text
    page.get_by_role("button", name="Sign out").click()
    sign_in_page(page, master, "otto", f"/workers/{agent_id}")
    status, text = page.evaluate(post, [f"/workers/{agent_id}/disable", False])
    assert status == 403 and "CSRF token" in text
    assert master.db(master.catalog.get_worker, agent_id).is_enabled


def _rows(page: Page) -> list[str]:
    return page.locator("#events tbody td.msg").all_inner_texts()


def test_lines_arrive_live_and_the_tail_ends_with_the_execution(
    master: RunningMaster, runs: Runs, page: Page
) -> None:
    lease = runs.start(master.add_worker())
    runs.lines(lease, ["starting"])
    sign_in_page(page, master, "vera", f"/executions/{lease.execution_id}")
    expect(page.locator("#live")).to_have_text("Live: new messages appear as they arrive.")
    for i in range(1, 4):
        runs.lines(lease, [f"row batch {i}"])
        expect(page.locator("#events tbody tr")).to_have_count(1 + i)
    runs.finish(lease)
    expect(page.locator("#live")).to_have_text("The execution has ended.")
    expect(page.locator("#status")).to_have_text("succeeded")
    assert _rows(page) == ["starting", "row batch 1", "row batch 2", "row batch 3"]


def _hide(page: Page, state: str) -> None:
    page.evaluate(
        """state => {
            Object.defineProperty(document, "visibilityState", {configurable: true, get: () => state});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


def test_a_reconnecting_live_tail_misses_no_line(master: RunningMaster, runs: Runs, page: Page) -> None:
    lease = runs.start(master.add_worker())
    sign_in_page(page, master, "vera", f"/executions/{lease.execution_id}")
    expect(page.locator("#live")).to_have_text("Live: new messages appear as they arrive.")
    stop = threading.Event()
    written: list[str] = []

    def produce() -> None:
        # Lines keep coming while the tab hides, shows, and is left and come back to.
        for i in range(1, 121):
            if stop.wait(0.02):
                return
            written.append(f"line {i:03d}")
            runs.lines(lease, [written[-1]])

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_until(lambda: len(_rows(page)) >= 10, what="the first lines")
        _hide(page, "hidden")  # the script closes its stream
        seen = len(_rows(page))
        wait_until(lambda: len(written) >= seen + 20, what="lines written while hidden")
        assert len(_rows(page)) <= seen + 1, "a hidden tab holds no stream"
        _hide(page, "visible")  # reopened with the last id it saw
        wait_until(lambda: len(_rows(page)) >= 60, what="lines after showing again")
        page.reload()  # a fresh page: the server renders what exists, the stream continues after it
        producer.join(60)
    finally:
        stop.set()
        producer.join(60)
    runs.finish(lease)
    expect(page.locator("#live")).to_have_text("The execution has ended.", timeout=30_000)
    rows = _rows(page)
    assert rows == written == [f"line {i:03d}" for i in range(1, 121)], "lines lost or repeated"


def test_pages_read_without_javascript(master: RunningMaster, runs: Runs, browser: Browser) -> None:
    lease = runs.start(master.add_worker("etl-1"))
    runs.lines(lease, ["first line", "second line"])
    context = browser.new_context(java_script_enabled=False, ignore_https_errors=True)
    try:
        page = context.new_page()
        sign_in_page(page, master, "vera", f"/executions/{lease.execution_id}")
        assert _rows(page) == ["first line", "second line"]
        expect(page.locator("#live")).to_contain_text("Reload the page for new messages")
        runs.lines(lease, ["third line"])
        page.reload()
        assert _rows(page) == ["first line", "second line", "third line"]
        page.goto(master.url + "/workers?q=etl")
        expect(page.get_by_role("link", name="etl-1")).to_be_visible()
    finally:
        context.close()
