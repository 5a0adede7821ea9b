"""A master certificate rotation from the Certificates page, in Chromium, against a real master and
two real workers (processes): the admin starts it, watches each worker accept the new certificate
without reloading the page, switches, watches them pin only the new one, and finishes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from packfleet.config import load_manager_settings, load_master_settings, load_worker_settings
from packfleet.localcluster import LocalCluster
from packfleet.pki import CertStore

from .conftest import NEEDS_CHROMIUM, wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    NEEDS_CHROMIUM,
]

PASSWORD = "admin-password-rotate"
WORKERS = {"worker1": "127.0.0.2", "worker2": "127.0.0.3"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "cluster") as cluster:
        cluster.init_master()
        cluster.start_master()
        for name, ip in WORKERS.items():
            cluster.add_worker(name, ip)
            cluster.start_worker(name)
        cluster.wait_for_workers(list(WORKERS))
        argv = cluster.command(
            cluster.master.home, "manager", "user", "add", "ada", "--role", "admin", "--password-stdin"
        )
        added = subprocess.run(
            argv, input=PASSWORD.encode(), env=cluster.env, capture_output=True, timeout=60, check=False
        )
        assert added.returncode == 0, added.stderr.decode()
        yield cluster


def _served(cluster: LocalCluster) -> str:
    """The certificate the master's settings name (the binding changes with them, together)."""
    return load_master_settings(cluster.master.home).ssl_cert_thumbprint


def test_an_admin_rotates_the_master_certificate_from_the_page_and_the_workers_follow(
    cluster: LocalCluster, page: Page
) -> None:
    url = f"https://127.0.0.1:{cluster.console_port}"
    old = _served(cluster)
    page.goto(url + "/certificates")
    page.get_by_label("User name").fill("ada")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Certificates")
    expect(page.locator("#rotation")).to_contain_text("No rotation under way")

    page.get_by_role("button", name="Start rotation").click()
    expect(page.locator("#rotation")).to_contain_text("Rotation started.")
    new = page.locator("#rotation dt:text-is('New certificate') + dd code").inner_text()
    assert new and new != old
    rows = page.locator("#rotation-workers tbody tr")
    expect(rows).to_have_count(len(WORKERS))
    # The workers learn the certificate in their heartbeat replies; the page follows on its own.
    progress = page.locator("#rotation-progress")
    expect(progress).to_have_text(
        f"{len(WORKERS)} of {len(WORKERS)} accept the new certificate", timeout=60_000
    )
    for name in WORKERS:
        row = page.locator(f'#rotation-workers tr[data-agent="{cluster.agent_id(name)}"]')
        expect(row).to_contain_text("accepts the new certificate")
        expect(row).to_contain_text(new)
        assert load_worker_settings(cluster.workers[name].home).next_master_https_cert_thumbprint == new
    assert _served(cluster) == old, "nothing switches before the admin says so"

    page.get_by_role("button", name="Switch to the new certificate").click()
    expect(page.locator("#rotation")).to_contain_text("Rotation switched.")
    assert _served(cluster) == new
    expect(progress).to_contain_text(f"{len(WORKERS)} of {len(WORKERS)} pin only the new one", timeout=60_000)
    page.get_by_role("button", name="Finish: retire the old certificate").click()
    expect(page.locator("#rotation")).to_contain_text("Rotation finished.")
    expect(page.locator("#rotation")).to_contain_text("No rotation under way")

    for name in WORKERS:
        settings = load_worker_settings(cluster.workers[name].home)
        assert (settings.master_https_cert_thumbprint, settings.next_master_https_cert_thumbprint) == (
            new,
            "",
        )
    assert not CertStore(cluster.master.home, "Root").contains(old)
    # The manager of the master's home was re-pinned along: the CLI below still reaches the master.
    assert load_manager_settings(cluster.master.home).master_https_cert_thumbprint == new
    # The workers still work: both keep sending heartbeats over the new certificate.
    wait_until(
        lambda: all(
            w["online"] for w in cluster.cli(cluster.master.home, "manager", "worker", "list", as_json=True)
        ),
        what="both workers online after the rotation",
    )
    audit = cluster.cli(cluster.master.home, "manager", "audit", "--action", "master-cert", as_json=True)
    rows_seen = [(a["actor"], a["action"]) for a in (audit["entries"] if isinstance(audit, dict) else audit)]
    assert rows_seen == [
        ("console:ada", "master-cert.rotation.start"),
        ("console:ada", "master-cert.switch"),
        ("console:ada", "master-cert.retire"),
    ], json.dumps(audit)[:2000]
