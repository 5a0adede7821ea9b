"""Writing a file so that a reader sees either the old content or the new, never a torn one.

A master re-reads ``bindings.json`` and MasterSettings.config while it runs (a binding change takes
effect without a restart), and a crash or a full disk during ``settings set`` must not leave a
worker with an empty WorkerSettings.config. So every write goes to a temporary file in the same
directory (same filesystem, hence an atomic ``rename(2)``), is fsynced, renamed over the target,
and the directory is fsynced so the rename itself survives a power cut (ext4 and XFS only promise
that after the directory's fsync).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from packfleet._files import atomic_replace
from packfleet.errors import SettingsError


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically, leaving the old file intact if anything fails.

    The new file gets exactly ``mode`` (``fchmod``, so the umask does not widen or narrow it). When
    ``path`` is a symlink, its target is replaced and the link kept, so a settings file linked
    from ``/etc`` stays linked. Errors become :class:`SettingsError` naming the file.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        atomic_replace(Path(path), payload, mode)
    except OSError as exc:
        raise _write_error(Path(path), exc) from exc


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of ``path`` (``.<name>.lock`` beside it).

    Atomic replacement keeps readers safe but not two writers: without the lock, two concurrent
    ``binding add`` or two first starts generating an AgentId would each write their own version
    and one change would be lost. ``flock`` is released by the kernel if the process dies.
    """
    lock_path = Path(path).with_name(f".{Path(path).name}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _write_error(lock_path, exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _write_error(path: Path, exc: OSError) -> SettingsError:
    reason = exc.strerror or str(exc)
    return SettingsError(
        f"cannot write {path}: {reason}; the previous content is unchanged",
        fix=f"check that {path.parent} exists and that this user may write there",
    )
