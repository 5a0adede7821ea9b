"""A failed write never leaves a torn or truncated file, and modes are exact."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from packfleet.config import atomic_write
from packfleet.errors import SettingsError


@pytest.fixture
def strict_umask() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_text_and_bytes(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write(target, "é\n")
    assert target.read_bytes() == "é\n".encode()
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"


def test_mode_is_exact_whatever_the_umask(tmp_path: Path, strict_umask: None) -> None:
    settings, secret = tmp_path / "s.config", tmp_path / "k.key"
    atomic_write(settings, "{}")
    atomic_write(secret, "x", mode=0o600)
    assert _mode(settings) == 0o644
    assert _mode(secret) == 0o600


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_failed_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "WorkerSettings.config"
    target.write_text('{"old": true}')

    def refuse(src: object, dst: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(SettingsError) as caught:
        atomic_write(target, '{"new": true}')
    assert target.read_text() == '{"old": true}'
    assert _leftovers(tmp_path) == []
    assert str(target) in caught.value.message
    assert "Read-only file system" in caught.value.message
    assert isinstance(caught.value.__cause__, OSError)


def test_disk_full_while_writing_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "bindings.json"
    target.write_text("[]")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SettingsError, match="No space left on device"):
        atomic_write(target, "[1, 2, 3]")
    assert target.read_text() == "[]"
    assert _leftovers(tmp_path) == []


def test_interrupt_while_writing_cleans_up_and_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "s.config"
    target.write_text("old")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_missing_directory_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot write") as caught:
        atomic_write(tmp_path / "nowhere" / "s.config", "{}")
    assert caught.value.fix is not None and "nowhere" in caught.value.fix


def test_symlinked_file_keeps_its_link(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    real = tmp_path / "etc" / "MasterSettings.config"
    real.write_text("old")
    link = tmp_path / "MasterSettings.config"
    link.symlink_to(real)
    atomic_write(link, "new")
    assert link.is_symlink()
    assert real.read_text() == "new"
