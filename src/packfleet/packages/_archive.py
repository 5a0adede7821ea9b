"""Project archives: deterministic zips, checked on deploy *and* again on the worker.

The catalog keys project versions by the archive's SHA-256 and workers cache extracted projects by it,
so the same tree must always give the same bytes: entries are sorted, timestamps fixed at the zip
epoch (1980-01-01) and permissions reduced to 0644/0755. A worker never trusts what the master hands
it, so :func:`extract_archive` re-checks everything :func:`inspect_archive` checks, counts the bytes it
actually writes (a zip's declared sizes are only claims), and renames a finished temporary folder into
place so a crash never leaves half a project behind.
"""

from __future__ import annotations

import compileall
import hashlib
import io
import os
import py_compile
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from packfleet.errors import ArchiveError, PackageError
from packfleet.packages._manifest import (
    MANIFEST_NAME,
    Project,
    check_files,
    check_no_sensitive_defaults,
    parse_manifest,
    relative_path_problem,
)

MAX_ARCHIVE_BYTES = 50 * 1024 * 1024
MAX_UNPACKED_BYTES = 200 * 1024 * 1024
MAX_FILES = 10_000
MAX_MANIFEST_BYTES = 1024 * 1024
#: Linux's NAME_MAX: a longer file or folder name cannot be created on the worker (ENAMETOOLONG).
MAX_NAME_BYTES = 255
#: A whole entry path, well under PATH_MAX (4096) once under a worker's projects folder.
MAX_PATH_BYTES = 1024
#: What zipfile can unpack on every worker; anything else fails there with NotImplementedError.
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}

_SKIPPED_DIRS = frozenset({"__pycache__", ".git"})
_SKIPPED_SUFFIXES = (".pyc",)
# The earliest time a zip header can hold (MS-DOS date); any fixed value makes archives reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"[A-Za-z]:")


def archive_sha256(data: bytes) -> str:
    """The lowercase hex SHA-256 of an archive: its identity in the catalog and worker caches."""
    return hashlib.sha256(data).hexdigest()


def _walk(directory: Path) -> Iterator[tuple[str, Path]]:
    """Yield ``(posix name, path)`` for each file under ``directory``, sorted, refusing links."""
    for current, dirs, files in os.walk(directory):
        base = Path(current)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                _refuse_link(directory, base / name)
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in sorted(files):
            path = base / name
            if path.is_symlink():
                _refuse_link(directory, path)
            if name.endswith(_SKIPPED_SUFFIXES):
                continue
            yield path.relative_to(directory).as_posix(), path


def _refuse_link(root: Path, link: Path) -> None:
    target = os.readlink(link)
    resolved = (link.parent / target).resolve()
    where = "outside the project" if not resolved.is_relative_to(root.resolve()) else "inside it"
    raise ArchiveError(
        f"{link}: is a symbolic link to {target!r} ({where}); project archives hold no links",
        fix=f"replace {link} with a copy of the file it points to",
    )


def build_archive(directory: Path) -> bytes:
    """Zip the project in ``directory`` reproducibly; the manifest and the files it names are checked.

    Skips ``__pycache__``, ``.git`` and ``*.pyc``; refuses symbolic links and trees over the limits.
    """
    if not directory.is_dir():
        raise PackageError(f"{directory}: not a folder", fix="give the folder holding packfleet.toml")
    files = sorted(_walk(directory))
    names = {name for name, _ in files}
    if MANIFEST_NAME not in names:
        raise ArchiveError(
            f"{directory}: no {MANIFEST_NAME}; a project folder holds one at its top",
            fix=f"create {directory / MANIFEST_NAME}",
        )
    if len(files) > MAX_FILES:
        raise ArchiveError(f"{directory}: {len(files)} files; an archive holds at most {MAX_FILES}")
    manifest_path = directory / MANIFEST_NAME
    project = parse_manifest(manifest_path.read_text(encoding="utf-8"), source=str(manifest_path))
    check_files(project, names.__contains__, source=str(manifest_path))
    check_no_sensitive_defaults(project, source=str(manifest_path))
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, path in files:
            mode = path.stat().st_mode
            total += path.stat().st_size
            if total > MAX_UNPACKED_BYTES:
                raise ArchiveError(
                    f"{directory}: files add up to more than {MAX_UNPACKED_BYTES} bytes, "
                    "the unpacked limit of a project"
                )
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.create_system = 3  # Unix, so external_attr holds POSIX mode bits
            info.external_attr = (stat.S_IFREG | (0o755 if mode & 0o111 else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with path.open("rb") as source, archive.open(info, "w") as target:
                shutil.copyfileobj(source, target, _CHUNK)
    data = buffer.getvalue()
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ArchiveError(f"{directory}: the archive is {len(data)} bytes; the limit is {MAX_ARCHIVE_BYTES}")
    return data


def _open(data: bytes) -> zipfile.ZipFile:
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ArchiveError(f"the archive is {len(data)} bytes; the limit is {MAX_ARCHIVE_BYTES} (compressed)")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise ArchiveError(f"not a zip archive: {exc}") from exc


def _checked_entries(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Every entry after the safety checks on names, kinds and declared sizes."""
    infos = archive.infolist()
    if len(infos) > MAX_FILES:
        raise ArchiveError(f"the archive holds {len(infos)} entries; the limit is {MAX_FILES}")
    seen: set[str] = set()
    files: set[str] = set()
    parents: set[str] = set()
    declared = 0
    for info in infos:
        name = info.filename
        where = f"archive entry {name!r}"
        if "\\" in name or _DRIVE.match(name) or name.startswith("/"):
            raise ArchiveError(f"{where}: absolute paths, drive letters and backslashes are refused")
        problem = relative_path_problem(name.removesuffix("/"))
        if problem:
            raise ArchiveError(f"{where}: {problem}")
        _check_name_length(name, where)
        if info.compress_type not in _METHODS:
            raise ArchiveError(
                f"{where}: is compressed with method {info.compress_type}; a worker unpacks only "
                "stored and deflated entries",
                fix="build the archive with packfleet deploy FOLDER (it uses deflate)",
            )
        if name in seen:
            raise ArchiveError(f"{where}: appears twice; a name may be stored once")
        seen.add(name)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise ArchiveError(f"{where}: is a symbolic link; project archives hold no links")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveError(f"{where}: is a special file (mode {kind:o}); only files are allowed")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{where}: is encrypted; packfleet cannot read encrypted entries")
        parts = name.removesuffix("/").split("/")
        parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if info.is_dir():
            continue
        files.add(name)
        declared += info.file_size
        if declared > MAX_UNPACKED_BYTES:
            raise ArchiveError(
                f"the archive declares more than {MAX_UNPACKED_BYTES} unpacked bytes "
                f"(reached at {name!r}); refused as a possible zip bomb"
            )
    clash = sorted(files & parents)
    if clash:
        raise ArchiveError(f"archive entry {clash[0]!r} is both a file and a folder")
    return infos


def _check_name_length(name: str, where: str) -> None:
    encoded = name.removesuffix("/").encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_PATH_BYTES:
        raise ArchiveError(
            f"{where[:80]}...: the path is {len(encoded)} bytes; the limit is {MAX_PATH_BYTES}"
        )
    for part in encoded.split(b"/"):
        if len(part) > MAX_NAME_BYTES:
            raise ArchiveError(
                f"{where[:80]}...: a name of {len(part)} bytes; a file or folder name may have at most "
                f"{MAX_NAME_BYTES} (Linux NAME_MAX)"
            )


def _verify_contents(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """Read every entry once: a bad CRC or a size other than declared fails here, not on a worker."""
    total = 0
    for info in infos:
        if info.is_dir():
            continue
        read = 0
        try:
            with archive.open(info) as source:
                while chunk := source.read(_CHUNK):
                    read += len(chunk)
                    total += len(chunk)
                    if read > info.file_size or total > MAX_UNPACKED_BYTES:
                        raise ArchiveError(
                            f"archive entry {info.filename!r} unpacks to more bytes than declared "
                            f"or than {MAX_UNPACKED_BYTES} in all; refused as a zip bomb"
                        )
        except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, OSError, ValueError) as exc:
            raise ArchiveError(
                f"archive entry {info.filename!r} is corrupt (a worker would refuse it): {exc}",
                fix="build the archive again: packfleet deploy FOLDER",
            ) from exc
        if read != info.file_size:
            raise ArchiveError(
                f"archive entry {info.filename!r} holds {read} bytes but declares {info.file_size}; "
                "a worker would refuse it",
                fix="build the archive again: packfleet deploy FOLDER",
            )


def _read_manifest(archive: zipfile.ZipFile, names: set[str]) -> Project:
    source = f"{MANIFEST_NAME} in the archive"
    if MANIFEST_NAME not in names:
        raise ArchiveError(
            f"the archive has no {MANIFEST_NAME} at its top",
            fix=f"put {MANIFEST_NAME} at the top of the project folder and build the archive again",
        )
    info = archive.getinfo(MANIFEST_NAME)
    if info.file_size > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"{source} is {info.file_size} bytes; the limit is {MAX_MANIFEST_BYTES}")
    try:
        raw = archive.read(info)
        text = raw.decode("utf-8")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ArchiveError(f"{source} cannot be read: {exc}") from exc
    project = parse_manifest(text, source=source)
    check_files(project, names.__contains__, source=source)
    return project


def inspect_archive(data: bytes) -> Project:
    """Check an archive's safety, manifest and every entry's CRC without extracting it.

    Everything a worker's :func:`extract_archive` would refuse is refused here, so ``deploy``
    never stores a project no worker can unpack.
    """
    with _open(data) as archive:
        infos = _checked_entries(archive)
        project = _read_manifest(archive, {i.filename for i in infos if not i.is_dir()})
        check_no_sensitive_defaults(project, source=f"{MANIFEST_NAME} in the archive")
        _verify_contents(archive, infos)
        return project


def extract_archive(data: bytes, destination: Path) -> Project:
    """Check ``data`` again and unpack it at ``destination`` (which must not exist), atomically."""
    if destination.exists():
        raise ArchiveError(f"{destination}: already exists; a project is extracted once")
    with _open(data) as archive:
        infos = _checked_entries(archive)
        project = _read_manifest(archive, {i.filename for i in infos if not i.is_dir()})
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
        try:
            _extract_into(archive, infos, staging)
            # Compile once here rather than in every task process: a fresh process per task would
            # otherwise recompile the project on each import when PYTHONDONTWRITEBYTECODE is set or
            # the folder is read-only (~1.3 ms per task). CHECKED_HASH pycs stay valid whatever the
            # files' mtimes; `ddir` records the final path in tracebacks, not the staging one.
            compileall.compile_dir(
                staging,
                ddir=destination,
                quiet=2,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
            # mkdtemp makes 0700, which stays: packages run as the worker's own account, and project
            # files may hold connection strings, so no other account may read them.
            os.rename(staging, destination)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return project


def _extract_into(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], root: Path) -> None:
    total = 0
    for info in infos:
        target = root.joinpath(*info.filename.removesuffix("/").split("/"))
        if info.is_dir():
            target.mkdir(mode=0o700, parents=True, exist_ok=True)
            continue
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Private to the worker's account, as every file a node writes; the execute bit is kept.
        mode = 0o700 if (info.external_attr >> 16) & 0o111 else 0o600
        # O_EXCL|O_NOFOLLOW: the names were checked, but never write through anything already there.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        written = 0
        try:
            with archive.open(info) as source, open(os.open(target, flags, mode), "wb") as sink:
                while chunk := source.read(_CHUNK):
                    written += len(chunk)
                    total += len(chunk)
                    if written > info.file_size or total > MAX_UNPACKED_BYTES:
                        raise ArchiveError(
                            f"archive entry {info.filename!r} unpacks to more bytes than declared "
                            f"or than {MAX_UNPACKED_BYTES} in all; refused as a zip bomb"
                        )
                    sink.write(chunk)
        except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
            # zipfile stops reading at the declared size and then fails the CRC check, so an entry
            # whose real content is longer than its header claims surfaces here.
            raise ArchiveError(
                f"archive entry {info.filename!r} is corrupt or larger than declared: {exc}"
            ) from exc
        if written != info.file_size:
            raise ArchiveError(
                f"archive entry {info.filename!r} holds {written} bytes, not the {info.file_size} "
                "its header declares"
            )
