"""Extracted projects, keyed by the SHA-256 of their archive: downloaded once, checked, reused.

The master names a project version by its archive's SHA-256, so the name is also the check: the
worker refuses bytes that hash to anything else (a truncated download, a proxy that rewrote the
body, a master bug), and an extracted ``<home>/projects/<sha256>/`` never needs to be fetched again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from packfleet.errors import ArchiveError, ProtocolError
from packfleet.packages import extract_archive

log = logging.getLogger("packfleet.worker")

_SHA256 = re.compile(r"[0-9a-f]{64}")


def checked_sha256(text: str) -> str:
    """``text`` as 64 lowercase hex digits; anything else is refused before it becomes a path."""
    sha = text.strip().lower()
    if not _SHA256.fullmatch(sha):
        raise ProtocolError(f"project_sha256 {text!r} is not a SHA-256 (64 hex digits)")
    return sha


class ProjectCache:
    """``<root>/<sha256>/``: each project version extracted once, even for concurrent tasks.

    >>> cache = ProjectCache(home / "projects", download)   # doctest: +SKIP
    >>> await cache.get("9f86d0...")                         # doctest: +SKIP
    PosixPath('.../projects/9f86d0...')
    """

    def __init__(self, root: Path, download: Callable[[str], Awaitable[bytes]]) -> None:
        self.root = Path(root)
        self._download = download
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, sha256: str) -> Path:
        return self.root / checked_sha256(sha256)

    async def get(self, sha256: str) -> Path:
        """The extracted project, downloading and extracting it on first use.

        A lock per SHA-256 makes the tasks of one project wait for a single download instead of
        each fetching the archive; tasks of other projects are not held up.
        """
        sha = checked_sha256(sha256)
        target = self.root / sha
        if target.is_dir():
            return target
        lock = self._locks.setdefault(sha, asyncio.Lock())
        async with lock:
            if target.is_dir():
                return target
            data = await self._download(sha)
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha:
                raise ArchiveError(
                    f"the master sent {len(data)} bytes for project archive {sha}, but they hash to "
                    f"{actual}; refusing to run them",
                    fix="redeploy the project on the master (packfleet deploy FOLDER); if it happens "
                    "again, check for a proxy that alters HTTPS traffic",
                )
            # Extraction re-checks the archive (no absolute paths, '..', links, size limits) and
            # renames a finished folder into place, so a crash never leaves half a project here.
            project = await asyncio.to_thread(extract_archive, data, target)
            log.info("project %s %s (%s) extracted to %s", project.name, project.version, sha[:12], target)
        return target
