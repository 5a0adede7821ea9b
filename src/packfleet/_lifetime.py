"""Child processes that end with their parent, even when the parent is killed with SIGKILL.

A parent that exits normally stops its children itself (``LocalCluster.close``, the fork server's
shutdown), but a SIGKILL or a crash runs none of that, and a child in a session of its own
(``setsid``) is not reached by a terminal's signals either: it would live on, holding its port and
its files. Linux's ``prctl(PR_SET_PDEATHSIG, sig)`` (prctl(2)) makes the kernel send ``sig`` to the
child when its parent dies, however it dies; it survives ``execve`` of an ordinary program.

Two limits from prctl(2): the "parent" is the *thread* that forked, so the process must be started
from a thread that lives as long as the child should (the main thread, in packfleet); and a parent
that died between ``fork`` and the ``prctl`` call is never signalled about, so the child checks its
parent pid right after and exits itself.

``ctypes`` is imported here, at load time: in the fork server that is measured at under 2 ms of
start-up and about 0.2 MB of RSS (13.7 -> 13.9 MB), paid once, against the same 2 ms *per task*
had each child imported it after ``fork``, where the fork itself costs about 1 ms.

The call is made as cheaply as ``ctypes`` allows, because every fresh task's process makes it right
after its fork, where each object touched is a copy-on-write page fault: through ``PyDLL`` (the
interpreter lock stays held for a call that cannot block), without ``argtypes`` (a conversion object
per argument) and without ``use_errno`` (errno swapped in and out on every call). That is 3 to 7 page
faults where the declared call took 36 to 44. Python ints go to the variadic ``prctl`` as C ints,
which the x86-64 and AArch64 calling conventions pass in full registers, sign-extended, as the
``unsigned long`` it reads. Only a failed call is made again, with errno kept, to say why.
"""

from __future__ import annotations

import ctypes
import os

# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1

_prctl = ctypes.PyDLL(None).prctl
_prctl_with_errno = ctypes.PyDLL(None, use_errno=True).prctl


def die_with_parent(parent_pid: int, signum: int) -> None:
    """In a just-forked child of ``parent_pid``: receive ``signum`` when the parent dies.

    ``parent_pid`` is the parent's ``os.getpid()`` taken *before* the fork. If the parent has already
    died (the child was re-parented to init or a subreaper), the child exits at once with
    ``128 + signum``, as if the signal had come.

    >>> parent = os.getpid()                                               # doctest: +SKIP
    >>> subprocess.Popen(argv, preexec_fn=lambda: die_with_parent(parent, signal.SIGTERM))  # doctest: +SKIP
    """
    if _prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        _prctl_with_errno(_PR_SET_PDEATHSIG, signum, 0, 0, 0)  # again, for its errno
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    if os.getppid() != parent_pid:
        os._exit(128 + signum)
