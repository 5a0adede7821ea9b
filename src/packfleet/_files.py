"""Replacing a file so that a reader sees the old content or the new, never a torn or too-open one.

Shared by the two leaf layers that write node files: :mod:`packfleet.config` (settings, bindings)
and :mod:`packfleet.pki` (certificates and private keys). Each translates ``OSError`` into its own
layer's error.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_replace(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to ``path`` with exactly ``mode``; on any failure the old file is untouched.

    The temporary file lives in the same directory (same filesystem, so ``rename(2)`` is atomic) and
    is created 0600 by ``mkstemp`` before ``fchmod`` gives it ``mode``, so a private key is never
    readable by others, not even for a moment. It is fsynced before the rename and the directory
    after it: ext4 and XFS only promise the rename survives a power cut once the directory is synced.
    When ``path`` is a symlink its target is replaced and the link kept. Raises ``OSError``.

    Run as root, the new file keeps the owner and group of the one it replaces: a 0600 file that
    was given to a service account (``chown``, ``cert grant``) stays readable by that account when
    root rewrites it, e.g. with ``packfleet settings set``.
    """
    target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if old is not None and os.geteuid() == 0:
                os.fchown(handle.fileno(), old.st_uid, old.st_gid)
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_directory(target.parent)
    return target


def _fsync_directory(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        # Some filesystems (and container overlays) refuse to open directories for fsync; the rename
        # has happened, only its durability across a power cut is not guaranteed.
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
