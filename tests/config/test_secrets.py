"""The catalog password in CatalogUrl: a 0600 file that keeps its owner, and never shown in clear."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from packfleet.config import (
    MASTER_SETTINGS_FILE,
    MasterSettings,
    WorkerSettings,
    _redact,
    atomic_write,
    mask_url_password,
    redact_setting,
    save_master_settings,
    save_worker_settings,
    set_setting,
)
from packfleet.errors import SettingsError

SECRET = "s3cr3t-Pa55"
URL = f"postgresql+psycopg://packfleet:{SECRET}@127.0.0.1:5432/catalog"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (URL, "postgresql+psycopg://packfleet:***@127.0.0.1:5432/catalog"),
        ("postgresql://u:p@ss/w:rd@db/c", "postgresql://u:***@db/c"),
        (
            "postgresql://db/c?user=u&password=pw&sslmode=require",
            "postgresql://db/c?user=u&password=***&sslmode=require",
        ),
        ("u:pw@db/c", "u:***@db/c"),
        ("postgresql://packfleet@db/catalog", "postgresql://packfleet@db/catalog"),
        ("sqlite:////srv/m/catalog.db", "sqlite:////srv/m/catalog.db"),
        ("", ""),
    ],
)
def test_mask_url_password(url: str, shown: str) -> None:
    assert mask_url_password(url) == shown


def test_only_secret_keys_are_redacted() -> None:
    assert redact_setting("CatalogUrl", URL) == mask_url_password(URL)
    assert redact_setting("SqlServerName", URL) == mask_url_password(URL)
    assert redact_setting("MasterAddress", "https://u:p@h:1") == "https://u:p@h:1"
    assert redact_setting("CatalogUrl", 5) == 5


def test_master_settings_are_written_0600_by_save_and_by_set(tmp_path: Path) -> None:
    path = save_master_settings(tmp_path, MasterSettings(catalog_url=URL))
    assert _mode(path) == 0o600
    path.chmod(0o644)
    set_setting(tmp_path, "master", "PortNumber", "9443")
    assert _mode(path) == 0o600
    assert _mode(save_worker_settings(tmp_path, WorkerSettings())) == 0o600  # private, as every node file


def test_an_invalid_catalog_url_is_refused_without_its_password(tmp_path: Path) -> None:
    save_master_settings(tmp_path, MasterSettings())
    with pytest.raises(SettingsError) as caught:
        set_setting(tmp_path, "master", "CatalogUrl", f"packfleet:{SECRET}@db/catalog")
    assert SECRET not in str(caught.value)
    assert "packfleet:***@db/catalog" in caught.value.message
    assert SECRET not in (tmp_path / MASTER_SETTINGS_FILE).read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another account")
def test_root_rewriting_a_file_keeps_its_owner(tmp_path: Path) -> None:
    target = tmp_path / MASTER_SETTINGS_FILE
    atomic_write(target, "{}", mode=0o600)
    os.chown(target, 4242, 4343)  # as `chown packfleet-master: MasterSettings.config` would
    atomic_write(target, '{"PortNumber": 9443}', mode=0o600)
    assert (target.stat().st_uid, target.stat().st_gid, _mode(target)) == (4242, 4343, 0o600)


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(_redact)
    assert result.attempted > 0
    assert result.failed == 0
