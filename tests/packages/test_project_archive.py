"""Archives: reproducible builds, every attack refused, atomic extraction."""

from __future__ import annotations

import io
import os
import shutil
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from packfleet.errors import ArchiveError, PackageError
from packfleet.packages import (
    MAX_ARCHIVE_BYTES,
    MAX_UNPACKED_BYTES,
    Project,
    archive_sha256,
    build_archive,
    extract_archive,
    inspect_archive,
)

from .conftest import EXAMPLE

MANIFEST = b'[project]\nname = "p"\nversion = "1"\n[packages.job]\nkind = "python"\nentry = "m:main"\n'


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns when asked to write a duplicate name
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buffer.getvalue()


def valid(*extra: tuple[str | zipfile.ZipInfo, bytes]) -> list[tuple[str | zipfile.ZipInfo, bytes]]:
    return [("packfleet.toml", MANIFEST), ("m.py", b"def main(ctx): pass\n"), *extra]


def patch_declared_size(data: bytes, name: str, size: int) -> bytes:
    """Rewrite the uncompressed size that the central directory declares for ``name``."""
    raw = bytearray(data)
    position = raw.find(b"PK\x01\x02")
    while position >= 0:
        name_length = struct.unpack_from("<H", raw, position + 28)[0]
        if raw[position + 46 : position + 46 + name_length] == name.encode():
            struct.pack_into("<I", raw, position + 24, size)
            return bytes(raw)
        position = raw.find(b"PK\x01\x02", position + 4)
    raise AssertionError(f"{name} not in the central directory")


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def test_building_is_deterministic(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(EXAMPLE, copy)
    os.utime(copy / "etl" / "load.py", (1_000_000, 1_000_000))
    (copy / "etl" / "__pycache__").mkdir(exist_ok=True)
    (copy / "etl" / "__pycache__" / "load.cpython-311.pyc").write_bytes(b"junk")
    (copy / ".git").mkdir()
    (copy / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (copy / "stale.pyc").write_bytes(b"junk")

    first, second = build_archive(EXAMPLE), build_archive(copy)

    assert first == second
    assert archive_sha256(first) == archive_sha256(second)
    sha = archive_sha256(first)
    assert len(sha) == 64 and sha == sha.lower()
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert names == sorted(names)
    assert "packfleet.toml" in names and "data/orders.csv" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or ".git" in n]
    infos = zipfile.ZipFile(io.BytesIO(first)).infolist()
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_a_changed_file_changes_the_hash(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(EXAMPLE, copy)
    with (copy / "data" / "orders.csv").open("a") as handle:
        handle.write("1099,2024-03-30,hooli,north,Widget,1,4.5\n")
    assert archive_sha256(build_archive(copy)) != archive_sha256(build_archive(EXAMPLE))


@pytest.mark.parametrize("target", ["../outside.txt", "m.py"])
def test_build_refuses_symbolic_links(tmp_path: Path, target: str) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "packfleet.toml").write_bytes(MANIFEST)
    (project / "m.py").write_text("def main(ctx): pass\n")
    (tmp_path / "outside.txt").write_text("secret")
    (project / "link").symlink_to(target)

    with pytest.raises(ArchiveError, match="is a symbolic link") as caught:
        build_archive(project)
    where = "outside the project" if target.startswith("..") else "inside it"
    assert where in caught.value.message


def test_build_needs_a_valid_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("")
    with pytest.raises(ArchiveError, match="no packfleet.toml"):
        build_archive(tmp_path)
    (tmp_path / "packfleet.toml").write_text("[project]\n")
    with pytest.raises(PackageError, match=r"\[project\] key 'name': is required"):
        build_archive(tmp_path)


def test_inspect_returns_the_project(etl_archive: bytes) -> None:
    project = inspect_archive(etl_archive)
    assert isinstance(project, Project)
    assert project.name == "etl" and "load" in project.packages


def test_zip_made_by_other_tools_with_folder_entries_is_accepted(tmp_path: Path) -> None:
    data = make_zip([("lib/", b""), ("lib/x.py", b""), *valid()])
    extract_archive(data, tmp_path / "out")
    assert (tmp_path / "out" / "lib" / "x.py").is_file()


Check = Callable[[bytes], object]


def _inspect(data: bytes) -> object:
    return inspect_archive(data)


@pytest.fixture(params=["inspect", "extract"])
def check(request: pytest.FixtureRequest, tmp_path: Path) -> Check:
    """Both entry points refuse the same archives; extract also leaves nothing behind."""
    if request.param == "inspect":
        return _inspect

    def extract(data: bytes) -> object:
        destination = tmp_path / "dest" / "project"
        try:
            return extract_archive(data, destination)
        finally:
            assert not destination.exists()
            parent = tmp_path / "dest"
            assert not parent.exists() or os.listdir(parent) == []

    return extract


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (valid(("/etc/cron.d/x", b"")), "absolute paths"),
        (valid(("../escape.py", b"")), "'..'"),
        (valid(("lib/../../escape.py", b"")), "'..'"),
        (valid(("lib\\evil.py", b"")), "backslashes"),
        (valid(("C:/evil.py", b"")), "drive letters"),
        (valid(symlink_entry("link", "/etc/passwd")), "is a symbolic link"),
        (valid(("m.py", b"again")), "appears twice"),
        (valid(("m.py/inner", b"")), "both a file and a folder"),
        ([("m.py", b"")], "no packfleet.toml"),
        ([("packfleet.toml", b"[project]\nname = 1\n")], "key 'name': expected a string"),
        ([("packfleet.toml", MANIFEST)], "module of 'm:main' not found"),
    ],
)
def test_unsafe_or_invalid_archives_are_refused(
    check: Check, entries: list[tuple[str | zipfile.ZipInfo, bytes]], message: str
) -> None:
    with pytest.raises(PackageError) as caught:
        check(make_zip(entries))
    assert message in caught.value.message


def test_not_a_zip_is_refused(check: Check) -> None:
    with pytest.raises(ArchiveError, match="not a zip archive"):
        check(b"PK\x03\x04 this is not really a zip")


def test_an_archive_over_the_compressed_limit_is_refused(check: Check) -> None:
    with pytest.raises(ArchiveError, match=f"the limit is {MAX_ARCHIVE_BYTES}"):
        check(bytes(MAX_ARCHIVE_BYTES + 1))


def test_zip_bomb_by_declared_size_is_refused(check: Check) -> None:
    data = patch_declared_size(make_zip(valid(("big.bin", b"0" * 100))), "big.bin", MAX_UNPACKED_BYTES)
    with pytest.raises(ArchiveError, match="possible zip bomb"):
        check(data)


def test_zip_bomb_by_actual_size_is_refused(tmp_path: Path) -> None:
    # The header claims 10 bytes; 5 MB of zeros (a few KB compressed) come out.
    data = patch_declared_size(make_zip(valid(("big.bin", bytes(5_000_000)))), "big.bin", 10)
    # Declared sizes look harmless; reading every entry (as deploy does) tells, as extraction does.
    with pytest.raises(ArchiveError, match="'big.bin' is corrupt"):
        inspect_archive(data)
    destination = tmp_path / "project"

    with pytest.raises(ArchiveError, match="larger than declared"):
        extract_archive(data, destination)

    assert not destination.exists()
    assert os.listdir(tmp_path) == []


def test_extract_is_atomic_when_a_late_entry_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(make_zip(valid(("zzz.txt", b"last entry " * 100))))
    payload = data.find(b"zzz.txt") + len("zzz.txt")  # first byte of its compressed data
    data[payload + 2] ^= 0xFF
    destination = tmp_path / "project"

    with pytest.raises(ArchiveError, match="'zzz.txt' is corrupt"):
        extract_archive(bytes(data), destination)

    assert os.listdir(tmp_path) == []


def test_extract_unpacks_precompiles_and_refuses_to_overwrite(tmp_path: Path, etl_archive: bytes) -> None:
    destination = tmp_path / "projects" / archive_sha256(etl_archive)

    project = extract_archive(etl_archive, destination)

    assert project == inspect_archive(etl_archive)
    assert (destination / "data" / "orders.csv").read_bytes() == (
        EXAMPLE / "data" / "orders.csv"
    ).read_bytes()
    # Private to the worker's account: project files may hold connection strings.
    assert stat.S_IMODE((destination / "etl" / "load.py").stat().st_mode) == 0o600
    assert stat.S_IMODE(destination.stat().st_mode) == 0o700
    assert list((destination / "etl" / "__pycache__").glob("load.*.pyc"))
    with pytest.raises(ArchiveError, match="already exists"):
        extract_archive(etl_archive, destination)


def test_executable_bit_survives_and_nothing_else(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("run.sh")
    info.create_system = 3
    info.external_attr = (stat.S_IFREG | 0o4777) << 16
    extract_archive(make_zip(valid((info, b"#!/bin/sh\n"))), tmp_path / "p")
    assert stat.S_IMODE((tmp_path / "p" / "run.sh").stat().st_mode) == 0o700
