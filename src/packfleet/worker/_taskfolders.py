"""Task folders: ``<TasksRootFolder>/<execution>-<attempt>``, the newest ``TaskFolderKeepCount`` kept.

Each task attempt runs in its own folder, as in SSIS, and its ``task.log`` is there. Kept forever,
they would fill the worker's disk; past ``TaskFolderKeepCount`` the oldest ended ones go. They are
not deleted but *reused*: emptied (``task.log`` truncated, everything else deleted) off the event
loop and kept as spares (``<root>/.spare-<n>``), and a new attempt's folder is a spare renamed.
Making a file or a folder allocates an inode: on the ext4 disks measured here about 0.5 ms of CPU
each, two per task (the folder and its ``task.log``), a third of a pooled no-op's whole cost on the
worker (``make bench``); a rename and a truncate take about 20 µs. With too few ended folders to
reuse (a new worker, or ``TaskFolderKeepCount`` 0: keep them all), the folder is made as before.

A package runs as the worker's user and may leave anything in its folder: links, FIFOs, folders it
cannot list. Emptying goes through a descriptor of the folder and never follows a link (a
``task.log`` planted as a link to another file is removed, not truncated), and a folder that cannot
be emptied is deleted instead, or left as it is when even that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import stat
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

log = logging.getLogger("packfleet.worker")

_TASK_FOLDER = re.compile(r"\d+-\d+")
_SPARE = re.compile(r"\.spare-(\d+)")
TASK_LOG = "task.log"


class TaskFolders:
    """The task folders of one ``TasksRootFolder``: the ended ones oldest first, and ready spares.

    :meth:`claim` (on the event loop, before a launch) renames a spare into place; :meth:`ended`
    records an attempt's folder and starts the background clean-up that keeps at most ``keep``
    ended folders and up to ``spares`` emptied ones ready.
    """

    def __init__(
        self,
        root: Path,
        *,
        keep: int,
        spares: int,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
    ) -> None:
        self.root = root
        self.keep = keep
        self.spares_wanted = spares
        self._spawn = spawn
        #: Folders of ended attempts (and those found at start-up), oldest first.
        self.ended_folders: deque[Path] = deque()
        #: Emptied folders ready to become a new attempt's folder.
        self.spares: list[Path] = []
        self._next_spare = 0
        #: Work for the thread: (folder, the spare it becomes or None to delete it), or (None, a
        #: spare to make anew).
        self._slow: deque[tuple[Path | None, Path | None]] = deque()
        #: Whether a new spare gets an empty task.log: as the last attempt was told (TaskLogEnabled).
        self._task_log = True
        self._tidying: asyncio.Task[Any] | None = None
        self._scan()

    def _scan(self) -> None:
        """Take in the folders an earlier run left: task folders by age, spares as they are."""
        found: list[tuple[float, str]] = []
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        if spare := _SPARE.fullmatch(entry.name):
                            self.spares.append(Path(entry.path))
                            self._next_spare = max(self._next_spare, int(spare.group(1)) + 1)
                        elif _TASK_FOLDER.fullmatch(entry.name):
                            found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
        except FileNotFoundError:  # no task has run under this root yet
            return
        except OSError as exc:
            log.warning("cannot list the task folders in %s (%s); none is reused", self.root, exc)
            return
        self.ended_folders.extend(self.root / name for _, name in sorted(found))

    def claim(self, folder: Path, *, task_log: bool) -> bool:
        """Make ``folder`` (absent) from a spare; True when it now exists, False to make it anew.

        ``task_log``: keep the spare's empty ``task.log`` (else it is removed, as a folder whose
        task log is switched off has none).
        """
        self._task_log = task_log
        claimed = self._rename_a_spare(folder)
        if claimed and not task_log:
            with contextlib.suppress(OSError):
                os.unlink(folder / TASK_LOG)
        self._tidy()
        return claimed

    def _rename_a_spare(self, folder: Path) -> bool:
        while self.spares:
            spare = self.spares.pop()
            try:
                os.rename(spare, folder)
                return True
            except FileNotFoundError:  # deleted behind the worker's back: try the next one
                continue
            except OSError as exc:  # the name is taken (by an attempt run before): made as before
                self.spares.append(spare)
                log.debug("task folder %s: a spare could not be used (%s)", folder, exc)
                return False
        return False

    def ended(self, folder: Path) -> None:
        """An attempt ran in ``folder`` (which it may not have made): it counts from now."""
        self.ended_folders.append(folder)
        self._tidy()

    def _tidy(self) -> None:
        """Beyond ``keep``: turn the oldest ended folders into spares, delete them once enough are ready.

        A folder holding nothing but its ``task.log`` (the usual case) is made a spare here, in a
        few system calls; any other is emptied, or deleted, in a thread (it may hold anything).
        """
        while self.keep > 0 and len(self.ended_folders) > self.keep:
            if len(self.spares) < self.spares_wanted:
                oldest = self.ended_folders.popleft()
                spare = self._spare_name()
                made = make_spare(oldest, spare, quick=True)
                if made:
                    self.spares.append(spare)
                elif made is None:
                    self._slow.append((oldest, spare))
            elif len(self.ended_folders) > self.keep + self.spares_wanted:
                self._slow.append((self.ended_folders.popleft(), None))
            else:
                break
        # Nothing to reuse yet (a new worker, or keep 0): new spares are made ahead in the thread,
        # so an idle worker's next task does not wait for its folder. Under load this is the same
        # work a task would do itself.
        if self.keep == 0 or len(self.ended_folders) <= self.keep:
            coming = sum(1 for _, spare in self._slow if spare is not None)
            for _ in range(self.spares_wanted - len(self.spares) - coming):
                self._slow.append((None, self._spare_name()))
        if self._slow and (self._tidying is None or self._tidying.done()):
            self._tidying = self._spawn(self._tidy_slowly())

    def _spare_name(self) -> Path:
        self._next_spare += 1
        return self.root / f".spare-{self._next_spare - 1}"

    async def _tidy_slowly(self) -> None:
        """The work :meth:`_tidy` left to a thread, one folder per hop (a worker stopping waits for one)."""
        while self._slow:
            folder, spare = self._slow.popleft()
            if spare is None:
                if folder is not None:
                    await asyncio.to_thread(_delete, folder)
            elif folder is None:
                if await asyncio.to_thread(make_new_spare, spare, task_log=self._task_log):
                    self.spares.append(spare)
            elif await asyncio.to_thread(make_spare, folder, spare):
                self.spares.append(spare)


def make_spare(folder: Path, spare: Path, *, quick: bool = False) -> bool | None:
    """Empty ``folder`` but for a truncated ``task.log`` and rename it ``spare``.

    True once done; False if it cannot be (a folder that cannot be emptied is deleted instead, as
    far as it can be: the disk is what ``TaskFolderKeepCount`` bounds). ``quick``: only a folder
    holding nothing else (None for any other, untouched).
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:  # the attempt ended before its folder was made
        return False
    except OSError:  # a link where the folder was, or a folder the package made unreadable
        if quick:
            return None
        _delete(folder)
        return False
    try:
        names = os.listdir(fd)
        if not quick:
            _empty(fd, names)
        elif not set(names) <= {TASK_LOG} or (names and not _truncate(fd)):
            return None  # anything else, or a task.log that is no plain file: the thread's work
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o700:
            os.fchmod(fd, 0o700)  # the package opened it up
        os.rename(folder, spare)
        return True
    except OSError as exc:
        if quick:
            return None
        log.debug("task folder %s could not be reused (%s); deleting it", folder, exc)
        _delete(folder)
        return False
    finally:
        os.close(fd)


def make_new_spare(spare: Path, *, task_log: bool) -> bool:
    """A new empty folder ``spare`` (private), with an empty ``task.log`` if ``task_log``."""
    try:
        spare.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.mkdir(spare, 0o700)
        if task_log:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            os.close(os.open(spare / TASK_LOG, flags, 0o666))
        return True
    except OSError as exc:
        log.warning("cannot make a task folder in %s (%s)", spare.parent, exc)
        _delete(spare)
        return False


def _empty(fd: int, names: list[str]) -> None:
    """Delete the entries ``names`` of the folder open as ``fd`` but a regular ``task.log``, which is
    truncated."""
    for name in names:
        if name == TASK_LOG and _truncate(fd):
            continue
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            shutil.rmtree(name, dir_fd=fd)  # fd-based on Linux: follows no link it meets
        else:
            os.unlink(name, dir_fd=fd)


def _truncate(fd: int) -> bool:
    """Truncate ``task.log`` in the folder ``fd`` if it is a regular file (never through a link)."""
    try:
        log_fd = os.open(TASK_LOG, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError:  # a link (ELOOP), a FIFO without a reader (ENXIO), a folder (EISDIR)...
        return False
    try:
        if not stat.S_ISREG(os.fstat(log_fd).st_mode):
            return False
        os.ftruncate(log_fd, 0)
        return True
    finally:
        os.close(log_fd)


def _delete(folder: Path) -> None:
    try:
        if os.path.islink(folder):
            os.unlink(folder)
        else:
            shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("task folder %s could not be deleted (%s); it is left as it is", folder, exc)
