"""The worker's half of both rotations: pins promoted or dropped as the master says, renewal timing,
the plain-words refusal of an expired certificate, and the pid file `worker rotate-cert` signals."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from packfleet.config import load_worker_settings
from packfleet.errors import CertificateExpired
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.worker import load_identity, renewal_due, running_agent
from packfleet.worker._renewal import PID_FILE, check_not_expired, remove_pid_file, write_pid_file
from packfleet.worker._rotation import follow_master

from .conftest import MakeAgent, Pki, write_home
from .stubmaster import StubMaster


def _rotating_home(tmp_path: Path, pki: Pki) -> tuple[Path, Credential]:
    """A worker home pinning the master's certificate and, as NextMasterHttpsCertThumbprint, another."""
    upcoming = create_self_signed(["127.0.0.1", "localhost"])
    home = write_home(tmp_path / "worker", pki, "https://127.0.0.1:8391")
    CertStore(home, "Root").add(Credential(upcoming.certificate))
    home = write_home(
        home, pki, "https://127.0.0.1:8391", next_master_https_cert_thumbprint=upcoming.thumbprint
    )
    return home, upcoming


def test_the_switched_master_certificate_is_promoted_and_the_old_one_dropped(
    tmp_path: Path, pki: Pki
) -> None:
    home, upcoming = _rotating_home(tmp_path, pki)
    identity = follow_master(home, load_identity(home), upcoming.thumbprint)
    assert identity is not None and identity.pins == [upcoming.thumbprint]
    settings = load_worker_settings(home)
    assert settings.master_https_cert_thumbprint == upcoming.thumbprint
    assert settings.next_master_https_cert_thumbprint == ""
    assert not CertStore(home, "Root").contains(pki.master.thumbprint)
    assert follow_master(home, identity, upcoming.thumbprint) is None  # nothing left to do


def test_an_aborted_rotation_drops_the_next_pin(tmp_path: Path, pki: Pki) -> None:
    home, upcoming = _rotating_home(tmp_path, pki)
    identity = follow_master(home, load_identity(home), pki.master.thumbprint)
    assert identity is not None and identity.pins == [pki.master.thumbprint]
    assert not CertStore(home, "Root").contains(upcoming.thumbprint)
    assert CertStore(home, "Root").contains(pki.master.thumbprint)


def test_renewal_is_due_after_two_thirds_of_the_lifetime() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    info = create_self_signed(["w"], days=90, not_before=start).info()
    assert not renewal_due(info, start + timedelta(days=59))
    assert renewal_due(info, start + timedelta(days=60))


def test_an_expired_certificate_is_explained_with_the_ways_back_in() -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    info = create_self_signed(["w"], days=30, not_before=start).info()
    check_not_expired(info, start + timedelta(days=29))
    with pytest.raises(CertificateExpired, match=r"expired 1 day ago \(2020-01-31") as expired:
        check_not_expired(info, start + timedelta(days=31))
    assert expired.value.fix is not None
    assert "packfleet worker join" in expired.value.fix
    assert "packfleet manager worker connect" in expired.value.fix


async def test_the_heartbeat_says_which_master_certificates_the_worker_accepts(
    home: Path, pki: Pki, stub: StubMaster, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home)
    await agent.heartbeat()
    assert stub.heartbeats[-1].accepted_master_thumbprints == [pki.master.thumbprint]


def test_the_pid_file_names_this_process_until_it_is_stale(tmp_path: Path) -> None:
    assert running_agent(tmp_path) is None
    write_pid_file(tmp_path)
    assert running_agent(tmp_path) == os.getpid()
    (tmp_path / PID_FILE).write_text(f"{os.getpid()} 1\n")  # same pid, another start time: recycled
    assert running_agent(tmp_path) is None
    write_pid_file(tmp_path)
    remove_pid_file(tmp_path)
    assert not (tmp_path / PID_FILE).exists()


def test_a_rotation_left_half_way_is_finished_or_forgotten(tmp_path: Path, pki: Pki) -> None:
    from packfleet.worker._renewal import PENDING_FILE, Pending, resume_rotation

    home = write_home(tmp_path / "worker", pki, "https://127.0.0.1:8391")
    old = load_worker_settings(home).worker_https_cert_thumbprint
    new = create_self_signed(["worker1", "127.0.0.2"])
    CertStore(home, "My").add(new)
    (home / PENDING_FILE).write_text(f'{{"retire": "{old}", "new": "{new.thumbprint}"}}')
    # Registered but never switched to: the settings are pointed at the new certificate.
    assert resume_rotation(home, Pending(retire=old, new=new.thumbprint))
    assert load_worker_settings(home).worker_https_cert_thumbprint == new.thumbprint
    # A note naming a certificate that is gone is dropped, so renewal can start over.
    gone = create_self_signed(["worker1"])
    assert not resume_rotation(home, Pending(retire=new.thumbprint, new=gone.thumbprint))
    assert not (home / PENDING_FILE).exists()
