"""The manager side of a master certificate rotation, as a library: against a real master, the
manager's own pins follow the master's certificate and it never loses its connection."""

from __future__ import annotations

from master.support import MasterHome
from packfleet.config import load_manager_settings, set_setting
from packfleet.manager import ManagerClient, MasterCertRotator, awaited_workers
from packfleet.master import MasterServer
from packfleet.pki import CertStore
from packfleet.protocol import RotationStatus


async def test_a_rotation_with_no_worker_runs_to_the_end_and_moves_the_managers_pin(
    mh: MasterHome, server: MasterServer
) -> None:
    old = mh.master.thumbprint
    lines: list[str] = []
    async with MasterCertRotator(mh.home, note=lines.append, timeout=5) as rotation:
        result = await rotation.run(cns=[], days=30, force=False)
    new = result.finished.new
    assert (result.finished.phase, result.finished.old, result.behind) == ("finished", old, [])
    assert result.to_dict()["phase"] == "finished"  # what --json prints
    settings = load_manager_settings(mh.home)
    assert (settings.master_https_cert_thumbprint, settings.next_master_https_cert_thumbprint) == (new, "")
    assert not CertStore(mh.home, "Root").contains(old)
    assert server.serving_thumbprint == new
    async with ManagerClient.from_home(mh.home) as manager:  # pins the new certificate only
        assert (await manager.master_cert_rotation()).phase == "none"
    assert any("started the rotation" in line for line in lines)
    assert any(f"{old} retired" in line for line in lines)


async def test_abort_forgets_the_next_pin(mh: MasterHome, server: MasterServer) -> None:
    async with ManagerClient.from_home(mh.home) as manager:
        started = await manager.rotate_master_cert("start")
    # What a `run` interrupted after the announcement leaves: the next certificate pinned beside.
    set_setting(mh.home, "manager", "NextMasterHttpsCertThumbprint", started.new or "")
    async with MasterCertRotator(mh.home, note=lambda _line: None, timeout=5) as rotation:
        aborted = await rotation.abort()
    assert aborted.aborted == started.new
    settings = load_manager_settings(mh.home)
    assert (settings.master_https_cert_thumbprint, settings.next_master_https_cert_thumbprint) == (
        mh.master.thumbprint,
        "",
    )


def test_only_online_workers_are_awaited() -> None:
    status = RotationStatus.from_wire(
        {
            "phase": "announced",
            "workers": [
                {"agent_id": "a", "online": True, "confirmed": False},
                {"agent_id": "b", "online": True, "confirmed": True},
                {"agent_id": "c", "online": False, "confirmed": False},
            ],
        }
    )
    assert [row.agent_id for row in awaited_workers(status, "confirmed")] == ["a"]
