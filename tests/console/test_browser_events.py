"""Filtering an execution's event messages in Debian's Chromium: the form, the filtered windows and
the way back to the unfiltered live view."""

from __future__ import annotations

import logging

import pytest
from playwright.sync_api import Page, expect

from .conftest import NEEDS_CHROMIUM, PASSWORDS, RunningMaster, Runs

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]


def test_a_running_executions_log_is_filtered_by_type_and_source_and_unfiltered_again(
    master: RunningMaster, runs: Runs, page: Page, console_errors: list[str]
) -> None:
    lease = runs.start(master.add_worker("etl-1"))
    for block in range(3):
        runs.lines(lease, [f"row {block}-{i:03d}" for i in range(300)])
        runs.lines(lease, [f"slow {block}-{i}" for i in range(5)], level=logging.WARNING, source="stderr")
        runs.lines(lease, [f"note {block}-{i}" for i in range(5)], level=logging.WARNING, source="log")
    page.goto(master.url + f"/executions/{lease.execution_id}")
    page.get_by_label("User name").fill("vera")
    page.get_by_label("Password").fill(PASSWORDS["vera"])
    page.get_by_role("button", name="Sign in").click()
    messages = page.locator("#events td.msg")
    expect(messages).to_have_count(930)
    page.get_by_label("Message type").select_option("warning")
    page.get_by_label("Source (exact or prefix").fill("std")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(master.url + f"/executions/{lease.execution_id}?type=warning&source=std")
    expect(messages).to_have_count(15)
    assert messages.all_inner_texts() == [f"slow {b}-{i}" for b in range(3) for i in range(5)]
    expect(page.locator("#live-off")).to_contain_text("Filtered: the live tail is off")
    expect(page.locator("#live")).to_have_count(0)
    expect(page.get_by_label("Message type")).to_have_value("warning")
    expect(page.get_by_label("Source (exact or prefix")).to_have_value("std")
    download = page.get_by_role("link", name="Download as text")
    assert (
        download.get_attribute("href") == f"/executions/{lease.execution_id}/log.txt?type=warning&source=std"
    )
    page.get_by_role("link", name="Unfiltered live view").click()
    expect(messages).to_have_count(930)
    expect(page.locator("#live")).to_have_text("Live: new messages appear as they arrive.", timeout=15_000)
    # Back on the unfiltered view the live tail runs again: a new line arrives without a reload.
    runs.lines(lease, ["after the filter"])
    expect(messages.last).to_have_text("after the filter", timeout=15_000)
    runs.finish(lease)
    expect(page.locator("#live")).to_have_text("The execution has ended.", timeout=15_000)
    assert console_errors == []
