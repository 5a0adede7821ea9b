"""``fork()`` for the fork servers: libc's fork without the interpreter's at-fork hooks, where safe.

``os.fork()`` runs every hook registered with ``os.register_at_fork`` around each fork. In a fork
server those are :mod:`threading`'s (it rebuilds its table of threads in the child) and
:mod:`logging`'s (it takes its module lock before the fork and re-creates the lock of every handler
in the child). Both repair what *other threads* may have left behind: a lock held by a thread that
does not exist in the child. A fork server has one thread and forks from its own loop, holding no
lock, so there is nothing to repair; but the hooks are Python code run over objects inherited from
the parent, and in a forked child each first write to a page is a copy-on-write fault. Measured on a
bare fork: 0.62 ms and about 220 page faults with the hooks, 0.16 ms and 44 without.

So :func:`fork` calls libc's ``fork()`` through ``ctypes.PyDLL`` (the GIL stays held across the call,
as ``os.fork`` holds it) and runs only the hooks registered *after* :func:`record_hooks` (those of a
project's modules that a warm server imports: :mod:`random` reseeding its generator, for one), in
the order ``os.fork`` would. It falls back to ``os.fork()`` unless all of this holds:

- CPython 3.11: its C after-fork steps (GIL, thread states, import lock, pending signals) too only
  repair what other threads could have left. Another version is not assumed to be the same;
- no module that registers hooks of its own was loaded before recording began (:data:`_HOOKED`,
  every such module of the 3.11 standard library besides the two above);
- one thread, checked by the server once its imports are done (:func:`single_threaded`).

One thing stays stale in a child: ``threading.main_thread().native_id`` is the parent's thread id.
The caller blocks the signals it handles before calling :func:`fork` (the call itself, a Python
function, runs any handler already due first): a handler tripped but not yet run would otherwise
be inherited and run, or reported as ignored on the task's stderr, in the child.
"""

from __future__ import annotations

import ctypes
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Hook = Callable[[], object] | None

# Their hooks are skipped: they only repair the state of other threads (see above).
_SKIPPED = frozenset({"threading", "logging"})
# The other 3.11 standard library modules that call os.register_at_fork at import.
_HOOKED = frozenset({"random", "concurrent.futures.thread"})

# The recorded hooks in the order os.fork runs them: "before" hooks last registered first. Kept as
# three lists at registration, so a fork builds none (in a child each new object costs page faults).
_before: list[Hook] = []
_in_child: list[Hook] = []
_in_parent: list[Hook] = []
_register = os.register_at_fork
_libc_fork: Callable[[], int] | None = None


def record_hooks() -> bool:
    """Record every at-fork hook registered from now on, and use libc's fork if that is safe.

    Called once by the fork server after its own imports. True when :func:`fork` skips the hooks.
    """
    global _libc_fork
    if _libc_fork is not None:
        return True
    if sys.version_info[:2] != (3, 11) or sys.implementation.name != "cpython":
        return False
    if _HOOKED & set(sys.modules):
        return False
    try:
        function = ctypes.PyDLL(None, use_errno=True).fork
    except AttributeError:
        return False
    function.restype = ctypes.c_int
    function.argtypes = []
    os.register_at_fork = _recording
    _libc_fork = function
    return True


def _recording(*, before: Hook = None, after_in_child: Hook = None, after_in_parent: Hook = None) -> None:
    given = {"before": before, "after_in_child": after_in_child, "after_in_parent": after_in_parent}
    _register(**{name: hook for name, hook in given.items() if hook is not None})
    _before.insert(0, before)
    _in_child.append(after_in_child)
    _in_parent.append(after_in_parent)


def single_threaded() -> bool:
    """True when this process has one thread (the kernel's count: C threads included)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _run(hooks: list[Hook]) -> None:
    for hook in hooks:
        if hook is not None:
            try:
                hook()
            except Exception:  # noqa: S110 - as os.fork, which reports and goes on
                pass


def fork(raw: bool) -> int:
    """``os.fork()``, or with ``raw`` (after :func:`record_hooks` said True) libc's fork."""
    if not raw or _libc_fork is None:
        return os.fork()
    _run(_before)
    pid = _libc_fork()
    if pid == 0:
        _run(_in_child)
        return 0
    _run(_in_parent)
    if pid < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return pid
