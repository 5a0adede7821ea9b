"""The 30/7-day rule every expiry display shares, and the worker's own expiry log lines."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from packfleet.expiry import describe_expiry, expiry_warning
from packfleet.provision import init_master, init_worker
from packfleet.worker import load_identity
from packfleet.worker._expiry import log_expiry


@pytest.mark.parametrize(
    ("days", "expected"),
    [(None, None), (400.0, None), (30.0, None), (29.9, "30d"), (7.0, "30d"), (6.9, "7d"), (0.0, "expired")],
)
def test_thresholds(days: float | None, expected: str | None) -> None:
    assert expiry_warning(days) == expected


def test_descriptions() -> None:
    assert describe_expiry(5.5) == "expires in 5 days"
    assert describe_expiry(1.2) == "expires in 1 day"
    assert describe_expiry(0.3) == "expires within a day"
    assert describe_expiry(-2.5) == "expired 2 days ago"


def test_worker_logs_its_own_and_its_masters_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    init_master(tmp_path / "m", cns=["127.0.0.1"], port=18391, days=400)
    init_worker(
        tmp_path / "w",
        master_url="https://127.0.0.1:18391",
        master_cert=tmp_path / "m" / "master.cer",
        name="w1",
        ip="127.0.0.2",
        days=30,
    )
    identity = load_identity(tmp_path / "w")
    now = identity.certificate.not_after - timedelta(days=10)
    with caplog.at_level(logging.WARNING, logger="packfleet.worker"):
        assert log_expiry(identity, now) == 1
    assert (
        f"worker certificate {identity.certificate.thumbprint} expires in 10 days (30d warning" in caplog.text
    )
    with caplog.at_level(logging.WARNING, logger="packfleet.worker"):
        assert log_expiry(identity, now + timedelta(days=380)) == 2
    assert "pinned master certificate" in caplog.text
