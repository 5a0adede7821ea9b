"""The console of a real cluster in Chromium: master and worker as processes, a package run with the
CLI, its lines arriving live on the execution page."""

from __future__ import annotations

import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from packfleet.localcluster import LocalCluster

from .conftest import NEEDS_CHROMIUM, wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    NEEDS_CHROMIUM,
]

LINES = 25
PASSWORD = "operator-password-9"


def _project(root: Path) -> Path:
    folder = root / "ticker"
    (folder / "ticker").mkdir(parents=True)
    (folder / "packfleet.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "ticker"
            version = "1.0.0"

            [packages.tick]
            kind = "python"
            entry = "ticker.jobs:tick"
            [packages.tick.parameters.lines]
            type = "int"
            default = {LINES}
            """
        )
    )
    (folder / "ticker" / "__init__.py").write_text("")
    (folder / "ticker" / "jobs.py").write_text(
        "import time\n\n\ndef tick(ctx):\n"
        "    for i in range(ctx.parameters['lines']):\n"
        "        print(f'tick {i + 1:02d}', flush=True)\n"
        "        time.sleep(0.25)\n"
    )
    return folder


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "cluster") as cluster:
        cluster.init_master()
        cluster.start_master()
        cluster.add_worker("worker1", "127.0.0.2")
        cluster.start_worker("worker1")
        cluster.wait_for_workers(["worker1"])
        cluster.cli(cluster.master.home, "deploy", str(_project(tmp_path)), as_json=True)
        added = subprocess.run(
            cluster.command(
                cluster.master.home,
                "manager",
                "user",
                "add",
                "olga",
                "--role",
                "operator",
                "--password-stdin",
            ),
            input=PASSWORD.encode(),
            env=cluster.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert added.returncode == 0, added.stderr.decode()
        yield cluster


def test_a_package_run_with_the_cli_shows_its_lines_live(cluster: LocalCluster, page: Page) -> None:
    url = f"https://127.0.0.1:{cluster.console_port}"
    printed = wait_until(
        lambda: (
            re.search(r"console: (https://\S+)", cluster.master.log_path.read_text())
            if cluster.master.log_path
            else None
        ),
        what="`master run` to print the console's address",
    )
    assert printed.group(1) == url + "/"
    page.goto(url + "/")
    page.get_by_label("User name").fill("olga")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    record = cluster.cli(cluster.master.home, "run", "default/ticker/tick", as_json=True)
    page.goto(f"{url}/executions/{record['execution_id']}")
    rows = page.locator("#events tbody td.msg", has_text=re.compile(r"^tick \d\d$"))
    # Lines appear while the package still runs: the page is not reloaded.
    wait_until(lambda: 0 < rows.count() < LINES, timeout=60, what="the first lines, before the last")
    expect(page.locator("#status")).not_to_have_text("succeeded")
    expect(rows).to_have_count(LINES, timeout=60_000)
    expect(page.locator("#live")).to_have_text("The execution has ended.", timeout=30_000)
    expect(page.locator("#status")).to_have_text("succeeded")
    assert rows.all_inner_texts() == [f"tick {i:02d}" for i in range(1, LINES + 1)]
