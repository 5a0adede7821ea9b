"""Managing the fleet from the console in Debian's Chromium: drain, edit and connect workers, start,
dry-run and re-run executions. Each change is checked in the catalog, the Root store and the audit
log of the real master behind the console."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from packfleet.catalog import AuditRecord, WorkerInfo
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.secretbox import is_sealed

from .conftest import NEEDS_CHROMIUM, RunningMaster, Runs, sign_in_page, wait_until

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]


def audit_rows(master: RunningMaster, action: str) -> list[AuditRecord]:
    return [r for r in master.db(master.catalog.list_audit, limit=1000) if r.action == action]


def heartbeat(
    master: RunningMaster, agent_id: str, name: str, *, running: int = 0, max_tasks: int = 0, age: float = 0
) -> None:
    """A heartbeat of worker ``agent_id``, sent ``age`` seconds ago by the catalog's clock."""
    worker = master.db(master.catalog.get_worker, agent_id)
    info = WorkerInfo(
        agent_id,
        name,
        f"{name}.example",
        "packfleet",
        ("127.0.0.2",),
        5.0,
        1024.0,
        running,
        "0.1.0",
        max_tasks,
    )
    saved = master.catalog.clock
    master.catalog.clock = lambda: datetime.now(UTC) - timedelta(seconds=age)
    try:
        master.db(master.catalog.worker_heartbeat, worker.certificates[0].thumbprint, info)
    finally:
        master.catalog.clock = saved


# --- workers -------------------------------------------------------------------------------------


def test_drain_disables_the_worker_and_follows_its_running_tasks_to_zero(
    master: RunningMaster, runs: Runs, page: Page
) -> None:
    agent = master.add_worker("etl-1")
    lease = runs.start(agent)
    sign_in_page(page, master, "otto", f"/workers/{agent}")
    page.get_by_label("Drain note").fill("kernel patching")
    page.get_by_role("button", name="Drain").click()
    status = page.get_by_role("region", name="Drain").get_by_role("status")
    expect(status).to_contain_text("Draining: 1 of 1 tasks still running")
    assert master.db(master.catalog.get_worker, agent).is_enabled is False
    # The disabled worker takes no new task, while its running one may finish.
    runs.finish(lease)
    # The page refreshes itself while tasks run: no click, only the catalog changed.
    expect(status).to_contain_text("Drained: no task is running (1 of 1 finished)", timeout=30_000)
    expect(page.get_by_role("progressbar", name="Drain progress")).to_have_attribute("value", "1")
    [row] = audit_rows(master, "worker.disable")
    assert row.actor == "console:otto" and row.target == agent
    assert row.details["reason"] == "drain: kernel patching"


def test_description_and_tags_are_edited_and_audited(master: RunningMaster, page: Page) -> None:
    agent = master.add_worker("etl-1")
    sign_in_page(page, master, "otto", f"/workers/{agent}")
    page.get_by_label("Description").fill("rack 4, the big one")
    page.get_by_label("Tags").fill("etl,ssd")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Worker saved.")
    record = master.db(master.catalog.get_worker, agent)
    assert (record.description, record.tags) == ("rack 4, the big one", "etl,ssd")
    assert page.get_by_label("Tags").input_value() == "etl,ssd"
    rows = audit_rows(master, "worker.update")
    assert rows and rows[-1].actor == "console:otto"


def test_a_viewer_sees_no_worker_actions_and_an_operator_cannot_connect(
    master: RunningMaster, page: Page
) -> None:
    agent = master.add_worker("etl-1")
    sign_in_page(page, master, "vera", f"/workers/{agent}")
    expect(page.get_by_role("button", name="Drain")).to_have_count(0)
    expect(page.get_by_role("button", name="Save")).to_have_count(0)
    page.goto(master.url + "/workers/connect")
    expect(page.get_by_role("main")).to_contain_text("Connecting a worker needs the admin role")


def test_connect_wizard_uploads_a_cer_shows_the_plan_and_trusts_it_on_confirm(
    master: RunningMaster, page: Page, tmp_path: Path
) -> None:
    cred = create_self_signed(["etl-9", "127.0.0.9"], days=90)
    cer = tmp_path / "worker.cer"
    cer.write_bytes(cred.cert_pem())
    sign_in_page(page, master, "ada", "/workers")
    page.get_by_role("link", name="Connect worker").click()
    page.get_by_label("Upload the worker's .cer file").check()
    page.get_by_label("Certificate file").set_input_files(str(cer))
    page.get_by_label("Display name").fill("etl-9")
    page.get_by_label("Enable it").check()
    page.get_by_role("button", name="Next").click()
    plan = page.get_by_role("list")
    expect(plan).to_contain_text(f"Use certificate {cred.thumbprint}")
    expect(plan).to_contain_text("Install it into the master's Root store")
    expect(plan).to_contain_text("enabled: it takes tasks at once")
    # Nothing is done before Confirm.
    assert not CertStore(master.mh.home, "Root").contains(cred.thumbprint)
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_contain_text(f"Certificate {cred.thumbprint} is trusted")
    assert CertStore(master.mh.home, "Root").contains(cred.thumbprint)
    certs = {c.thumbprint: c for c in master.db(master.catalog.certificates)}
    assert certs[cred.thumbprint].display_name == "etl-9" and certs[cred.thumbprint].enable_on_bind
    [row] = audit_rows(master, "certificate.add")
    assert (row.actor, row.target) == ("console:ada", cred.thumbprint)


def test_connect_wizard_by_thumbprint_finds_the_certificate_or_says_what_to_do(
    master: RunningMaster, page: Page
) -> None:
    cred = create_self_signed(["etl-8"], days=90)
    CertStore(master.mh.home, "My").add(Credential(cred.certificate))
    sign_in_page(page, master, "ada", "/workers/connect")
    page.get_by_label("Paste its thumbprint").check()
    page.get_by_label("Thumbprint", exact=True).fill("00" * 20)
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_role("main")).to_contain_text("is in neither the master's Root nor its My store")
    expect(page.get_by_role("main")).to_contain_text("packfleet worker join TOKEN")
    page.go_back()
    page.get_by_label("Paste its thumbprint").check()
    page.get_by_label("Thumbprint", exact=True).fill(cred.thumbprint.lower())
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_role("list")).to_contain_text(f"Use certificate {cred.thumbprint}")
    expect(page.get_by_role("list")).to_contain_text("disabled: enable it here afterwards")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_contain_text("is trusted by the master")
    assert CertStore(master.mh.home, "Root").contains(cred.thumbprint)


def test_connect_wizard_join_token_command_admits_a_real_worker(
    master: RunningMaster, page: Page, tmp_path: Path
) -> None:
    sign_in_page(page, master, "ada", "/workers/connect")
    page.get_by_label("Create a join token").check()
    page.get_by_label("Enable it").check()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_role("list")).to_contain_text("Create a join token that admits one worker")
    assert master.db(master.catalog.list_join_tokens) == []
    page.get_by_role("button", name="Confirm").click()
    command = page.get_by_label("Command").inner_text().strip()
    found = re.fullmatch(r"packfleet worker join (pfjoin1\.\S+)", command)
    assert found, command
    [token] = master.db(master.catalog.list_join_tokens)
    assert token.enable
    # The one command, run as a separate process in a fresh worker home.
    home = tmp_path / "worker-home"
    done = subprocess.run(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-m",
            "packfleet",
            "--home",
            str(home),
            "worker",
            "join",
            found.group(1),
            "--name",
            "joined-1",
            "--ip",
            "127.0.0.1",
            "--json",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    joined = wait_until(
        lambda: [w for w in master.db(master.catalog.list_workers) if w.display_name == "joined-1"],
        what="the joined worker in the catalog",
    )
    assert joined[0].is_enabled
    assert [r.actor for r in audit_rows(master, "token.create")] == ["console:ada"]


# --- executions ----------------------------------------------------------------------------------


def test_new_execution_dry_run_says_who_could_take_it_and_why_not_then_runs(
    master: RunningMaster, runs: Runs, page: Page
) -> None:
    ready = master.add_worker("ready-1")
    master.add_worker("off-1", enabled=False)
    busy = master.add_worker("busy-1")
    heartbeat(master, busy, "busy-1", running=2, max_tasks=2)
    gone = master.add_worker("gone-1")
    heartbeat(master, gone, "gone-1", age=600)
    other = master.add_worker("other-1")
    sign_in_page(page, master, "otto", "/executions")
    page.get_by_role("link", name="New execution").click()
    page.get_by_label("Package").select_option("default/etl/load")
    page.get_by_role("button", name="Choose").click()
    password = page.get_by_label("password", exact=True)
    expect(password).to_have_attribute("type", "password")
    expect(page.get_by_label("rows", exact=True)).to_have_attribute("type", "text")
    assert "s3cret" not in page.content()  # a sensitive default is never sent to the browser
    page.get_by_label("rows", exact=True).fill("42")
    password.fill("hunter2-hunter2")
    for name in ("ready-1", "off-1", "busy-1", "gone-1"):
        page.get_by_label(name, exact=True).check()
    page.get_by_role("button", name="Dry run").click()
    result = page.get_by_role("region", name="Dry run")
    expect(result).to_contain_text("1 of 5 workers could take it now.")
    rows = {
        r.locator("td").nth(0).inner_text(): r.locator("td").nth(2).inner_text()
        for r in result.locator("tbody tr").all()
    }
    assert rows == {
        "ready-1": "",
        "off-1": "disabled",
        "busy-1": "MaxTaskCount reached (2 of 2 running)",
        "gone-1": "offline (no heartbeat for over 3 minutes)",
        "other-1": "not in the allowed list",
    }
    assert master.db(master.catalog.list_executions) == []  # a dry run changes nothing
    # The choices survive the dry run, except the sensitive value, which is typed again.
    expect(page.get_by_label("rows", exact=True)).to_have_value("42")
    expect(page.get_by_label("password", exact=True)).to_have_value("")
    page.get_by_label("password", exact=True).fill("hunter2-hunter2")
    page.get_by_label("busy-1", exact=True).uncheck()
    page.get_by_label("gone-1", exact=True).uncheck()
    page.get_by_label("off-1", exact=True).uncheck()
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_text(re.compile(r"^Execution \d+ queued\.$"))).to_be_visible()
    [record] = master.db(master.catalog.list_executions)
    assert page.url == f"{master.url}/executions/{record.execution_id}?done=started"
    assert is_sealed(record.parameters["password"]), "a sensitive value is stored sealed"
    assert master.opened(record.parameters) == {"rows": 42, "password": "hunter2-hunter2"}
    assert record.allowed_workers == (ready,) and record.created_by == "console:otto"
    assert "hunter2" not in page.content()
    [row] = audit_rows(master, "execution.create")
    assert row.actor == "console:otto" and "hunter2" not in str(row.details)
    assert other  # listed, not allowed


def test_a_refused_parameter_is_shown_and_nothing_is_queued(
    master: RunningMaster, runs: Runs, page: Page
) -> None:
    sign_in_page(page, master, "otto", "/executions/new?target=default/etl/load")
    page.get_by_label("rows", exact=True).fill("many")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("rows")
    assert master.db(master.catalog.list_executions) == []


def test_re_run_starts_a_new_execution_with_the_same_parameters(
    master: RunningMaster, runs: Runs, page: Page
) -> None:
    agent = master.add_worker("etl-1")
    lease = runs.start(agent)
    runs.finish(lease)
    sign_in_page(page, master, "otto", f"/executions/{lease.execution_id}")
    page.get_by_role("button", name="Re-run").click()
    expect(page.get_by_text(re.compile(r"^Execution \d+ queued\.$"))).to_be_visible()
    newest = master.db(master.catalog.list_executions, limit=1)[0]
    assert newest.execution_id != lease.execution_id
    assert page.url.endswith(f"/executions/{newest.execution_id}?done=started")
    old = master.db(master.catalog.get_execution, lease.execution_id)
    assert is_sealed(newest.parameters["password"]) and newest.created_by == "console:otto"
    # The same values, not the old sealed text sealed again.
    assert (
        master.opened(newest.parameters)
        == master.opened(old.parameters)
        == {"rows": 10, "password": "s3cret"}
    )
    [row] = audit_rows(master, "execution.create")
    assert (row.actor, row.target) == ("console:otto", str(newest.execution_id))
    assert row.details == {"package": "default/etl/load", "rerun_of": lease.execution_id}


def test_a_viewer_cannot_start_or_re_run(master: RunningMaster, runs: Runs, page: Page) -> None:
    sign_in_page(page, master, "vera", "/executions")
    expect(page.get_by_role("link", name="New execution")).to_have_count(0)
    page.goto(master.url + "/executions/new")
    expect(page.get_by_role("main")).to_contain_text("Starting an execution needs the operator role")
