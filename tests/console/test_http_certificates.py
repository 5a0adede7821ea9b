"""The Certificates page over plain HTTPS: who may take a rotation step, CSRF, the audit trail with
the user's name, the manager of the master's home re-pinned, and the cached inventory."""

from __future__ import annotations

import pytest

from master.support import write_manager_settings
from packfleet.config import load_manager_settings
from packfleet.console import _rotation

from .conftest import Client, RunningMaster


@pytest.mark.parametrize("name", ["vera", "otto"])
def test_only_an_admin_may_take_a_rotation_step(client: Client, master: RunningMaster, name: str) -> None:
    client.sign_in(name)
    page = client.get("/certificates")
    assert page.status == 200 and "Start rotation" not in page.body, "the button is for admins only"
    for step in _rotation.STEPS:
        refused = client.post("/certificates/rotation", {"step": step, "csrf_token": page.csrf})
        assert refused.status == 403, step
        assert "needs the admin role" in refused.body
    assert master.rotation().record is None
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
    assert master.rotation().record is None
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
    record = master.rotation().record
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
    assert master.rotation().record is None
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
