"""Take the screenshots in docs/console/ with Debian's Chromium: ``python tests/console/make_screenshots.py``.

A master with its console runs in this process on a throwaway home, with a few workers, executions
and event messages made through the catalog, so each page has something to show.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from console.conftest import PASSWORDS, ROLES, RunningMaster, Runs  # noqa: E402
from master.support import build_master_home  # noqa: E402
from packfleet.console import hash_password  # noqa: E402
from packfleet.protocol import HeartbeatReply  # noqa: E402

OUT = HERE.parents[1] / "docs" / "console"
PAGES = {
    "login": "/login",
    "dashboard": "/",
    "workers": "/workers",
    "worker": None,  # filled in below
    "executions": "/executions",
    "execution": None,
    "certificates": "/certificates",
    "audit": "/audit",
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        master = RunningMaster(build_master_home(Path(tmp)))
        master.start()
        try:
            for name, password in PASSWORDS.items():
                master.db(master.catalog.add_user, name, ROLES[name], hash_password(password), actor="admin")
            agents = [master.add_worker(name) for name in ("etl-1", "etl-2", "reports-1")]
            master.db(
                master.catalog.set_worker_enabled, agents[2], False, actor="console:otto", reason="new disk"
            )
            runs = Runs(master, Path(tmp) / "project")
            leases = [runs.start(agents[i % 2]) for i in range(4)]
            for lease in leases[:3]:
                runs.lines(lease, [f"loaded batch {i} of 500 rows" for i in range(1, 9)])
                runs.finish(lease)
            runs.lines(leases[3], ["connecting to the warehouse", "loaded batch 1 of 500 rows"])
            PAGES["worker"] = f"/workers/{agents[0]}"
            PAGES["execution"] = f"/executions/{leases[3].execution_id}"
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=shutil.which("chromium"),
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                context = browser.new_context(
                    ignore_https_errors=True, viewport={"width": 1100, "height": 700}
                )
                page = context.new_page()
                page.goto(master.url + "/login")
                page.screenshot(path=OUT / "login.png")
                page.get_by_label("User name").fill("ada")
                page.get_by_label("Password").fill(PASSWORDS["ada"])
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(master.url + "/")
                for name, path in PAGES.items():
                    if name == "login":
                        continue
                    page.goto(master.url + str(path))
                    page.screenshot(path=OUT / f"{name}.png")
                    print(OUT / f"{name}.png")
                _actions(page, master, agents, runs)
                context.close()
                browser.close()
        finally:
            master.stop()


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=OUT / f"{name}.png", full_page=True)
    print(OUT / f"{name}.png")


def _actions(page: Page, master: RunningMaster, agents: list[str], runs: Runs) -> None:
    """The pages that change the fleet: drain, Connect worker, new execution and its dry run, a
    master certificate rotation under way, and the windows of a huge log."""
    _rotation(page, master, agents)
    _windows(page, master, agents[0], runs)
    busy = agents[1]
    runs.start(busy)
    page.goto(master.url + f"/workers/{busy}")
    page.get_by_label("Drain note").fill("patching the kernel")
    page.get_by_role("button", name="Drain").click()
    page.get_by_role("progressbar").wait_for()
    _shot(page, "worker-drain")
    page.goto(master.url + "/workers/connect")
    _shot(page, "connect")
    page.get_by_label("Create a join token").check()
    page.get_by_label("Enable it").check()
    page.get_by_role("button", name="Next").click()
    _shot(page, "connect-review")
    page.get_by_role("button", name="Confirm").click()
    _shot(page, "connect-token")
    page.goto(master.url + "/executions/new?target=default/etl/load")
    page.get_by_label("rows", exact=True).fill("500")
    page.get_by_label("etl-1", exact=True).check()
    page.get_by_label("etl-2", exact=True).check()
    page.get_by_role("button", name="Dry run").click()
    _shot(page, "execution-new")


def _rotation(page: Page, master: RunningMaster, agents: list[str]) -> None:
    rotation = master.rotation()
    page.goto(master.url + "/certificates")
    page.get_by_role("button", name="Start rotation").click()
    record = rotation.record
    assert record is not None
    # etl-1's heartbeat says it accepts the new certificate, as the worker route reports it.
    reply = HeartbeatReply("enabled", "", "", agents[0])
    master.run(_call(rotation.on_heartbeat, agents[0], [record.old, record.new], reply))
    page.goto(master.url + "/certificates/rotation")
    _shot(page, "rotation")
    page.get_by_role("button", name="Abort rotation").click()


async def _call(function: Any, *args: Any) -> Any:
    return function(*args)


def _windows(page: Page, master: RunningMaster, agent_id: str, runs: Runs) -> None:
    lease = runs.start(agent_id)
    for first in range(1, 3001, 500):
        runs.lines(lease, [f"row {i}: loaded" for i in range(first, first + 500)])
    runs.finish(lease)
    page.goto(master.url + f"/executions/{lease.execution_id}")
    page.locator("#gap").scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, -300)")
    page.screenshot(path=OUT / "execution-windows.png")
    print(OUT / "execution-windows.png")


if __name__ == "__main__":
    main()
