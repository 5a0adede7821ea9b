"""The fork server: a small, preloaded process that forks one child per package task.

SSIS runs each package in a fresh ``ISServerExec`` process. Starting an interpreter per task costs
tens of milliseconds; forking a process that has already imported what a task needs costs about one,
and the cost grows with the parent's memory (page tables are copied), so this process imports the
standard library modules it uses and nothing else (``python -X importtime`` shows the list; its RSS
stays near 12 MB). The runner starts it once::

    python -c "from packfleet.packages._forkserver import main; main()" <socket fd>

and talks to it over a ``SOCK_SEQPACKET`` socketpair (one JSON message per packet; pipe descriptors
travel beside it as ``SCM_RIGHTS`` ancillary data):

- ``{"op": "spawn", "id", "request"}`` + [stdout, stderr, event] fds: fork a task process;
- ``{"op": "pool", "id"}`` + [control socket, stdout, stderr, event fds]: fork a pooled process
  that runs the tasks sent to it, each followed by its end mark on the three pipes;
- ``{"op": "warm", "id", "project_dir", "entries"}`` + [socket]: fork a *warm server* for one
  project version. It imports that version's entry modules once, then serves ``spawn`` and ``kill``
  over the socket as this server does (saying ``ready``, or ``unfit`` and why not), so each of its
  task processes starts with the package already imported and still ends after its one task;
- ``{"op": "kill", "pid", "signal"}``: signal a child's process group;

and answers ``started``/``error`` per ``id`` and ``exited`` per pid. Only the parent of a process can
signal it without racing pid reuse (it alone knows whether it has reaped it), so every kill goes
through here. On an exit the server first collects the exit status with ``WNOWAIT``, then kills what
is left of the child's process group (the zombie leader keeps the group id from being reused), then
reaps: a package's helpers never outlive its task.

Each child is in a session of its own, so if the fork server itself is killed (SIGKILL, OOM killer)
nothing of the above runs; each child therefore asks the kernel for a SIGKILL when the fork server
dies (``PR_SET_PDEATHSIG``, :mod:`packfleet._lifetime`), set up before anything else it does. That
module's ``ctypes`` is loaded here, once (about 0.2 MB), so that a child pays only the system call.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal without its enum wrappers
import fcntl
import json
import os
import select
import signal
import socket
import sys
import time

# Preloaded, not used here: nearly every package imports typing (2-3 ms per child otherwise) and
# it adds 0.3 MB to the process.
import typing  # noqa: F401

from packfleet._lifetime import die_with_parent
from packfleet.packages import _child, _fork

# From here on, at-fork hooks are recorded (a warm server's imports may register some) and forks
# skip threading's and logging's when that is safe (see _fork).
_RAW_FORK = _fork.record_hooks()


def forks_raw() -> bool:
    """Whether this process forks through libc's ``fork()`` (see ``_fork``): hooks recorded, one thread."""
    return _RAW_FORK and _fork.single_threaded()


TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

    from packfleet.packages._context import PackageContext

MAX_MESSAGE = 256 * 1024
# Room for the most descriptors a request carries (three pipe ends).
_FDS_SPACE = socket.CMSG_SPACE(4 * 4)
POOL_CONTROL_FD = 4
# How long a shutdown lets children end after SIGTERM before SIGKILL.
SHUTDOWN_GRACE = 5.0
# Blocked across fork() until the child has dropped the fork server's handlers: a cancel's SIGTERM
# that lands in between must end the child, not run the server's handler in it and be lost.
_BLOCKED = {signal.SIGTERM, signal.SIGCHLD}
# The same as plain ints, for ``_signal``: on the fork path (parent and child) the ``signal``
# module's wrappers convert every number and handler to and from enums, and each enum object they
# touch is a copy-on-write page fault after a fork (about 100 per child, measured).
_BLOCKED_NUMBERS = tuple(int(signum) for signum in _BLOCKED)
_SIG_BLOCK, _SIG_UNBLOCK = int(signal.SIG_BLOCK), int(signal.SIG_UNBLOCK)
_SIGKILL = int(signal.SIGKILL)


def _devnull_onto(*fds: int) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in fds:
        os.dup2(null, fd)
    if null not in fds:
        os.close(null)


def _become_child(onto: dict[int, int], keep: int) -> None:
    """Start a new session (cancel signals the whole group), place ``onto``'s fds, close the rest.

    Descriptor 0 is the server's ``/dev/null`` (see :meth:`ForkServer.serve`), inherited as it is.
    """
    os.setsid()
    _signal.set_wakeup_fd(-1)
    for signum in _BLOCKED_NUMBERS:
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.pthread_sigmask(_SIG_UNBLOCK, _BLOCKED_NUMBERS)
    # A loop, not any() over a generator: a new function and generator object per task process.
    for source, target in onto.items():
        if source != target:  # a warm server's arrive in place: this is the fork server's case
            _place(onto)
            break
    os.closerange(keep, 1 << 16)


def _place(onto: dict[int, int]) -> None:
    # Move sources above every target first, so placing one never overwrites another.
    above = max(onto.values()) + 1
    moved = {fcntl.fcntl(source, fcntl.F_DUPFD, above): target for source, target in onto.items()}
    for source in onto:
        os.close(source)
    for source, target in moved.items():
        os.dup2(source, target)
        os.close(source)


class ForkServer:
    """The fork server's loop (or a warm server's, which only spawns); one per process, one thread."""

    def __init__(self, sock: socket.socket, *, warm: bool = False) -> None:
        self._sock = sock
        self._warm = warm
        self._pid = os.getpid()
        # Checked once: nothing this loop runs starts a thread.
        self._raw = forks_raw()
        self._children: set[int] = set()
        # epoll and recvmsg straight, not selectors and socket.recv_fds: after each fork every page
        # this loop writes is a copy-on-write fault, so it touches as few objects as it can.
        self._poll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._connected = True

    def serve(self) -> None:
        # Once here rather than in every child, which inherits it: a task's standard input.
        _devnull_onto(0)
        signal.set_wakeup_fd(self._wake_w)
        # A Python-level handler is needed for the wakeup fd to be written on SIGCHLD.
        signal.signal(signal.SIGCHLD, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides when we stop
        sock = self._sock.fileno()
        if self._warm:
            # Descriptors 1 to 3 (/dev/null here) are left free, so the three pipe ends of a spawn
            # request arrive as 1, 2 and 3: just where its child needs them, with nothing to move.
            for fd in (1, 2, _child.EVENT_FD):
                os.close(fd)
        self._poll.register(sock, select.EPOLLIN)
        self._poll.register(self._wake_r, select.EPOLLIN)
        self._send({"op": "ready", "pid": os.getpid()})
        while not self._stopping:
            for fd, _ in self._poll.poll():
                if fd == sock:
                    self._on_request()
                else:
                    self._drain_wakeups()
            self._reap()
        self._shutdown()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM:
            self._stopping = True

    def _drain_wakeups(self) -> None:
        # One read, not a loop to EAGAIN: an exception per exit costs more than it saves, and
        # epoll (level-triggered) reports the pipe again if anything is left in it.
        try:
            os.read(self._wake_r, 512)
        except BlockingIOError:
            pass

    def _send(self, message: dict[str, Any] | bytes) -> None:
        if not self._connected:
            return
        try:
            self._sock.send(message if isinstance(message, bytes) else json.dumps(message).encode())
        except OSError:
            self._connected = False
            self._stopping = True

    def _on_request(self) -> None:
        try:
            data, ancillary, _flags, _addr = self._sock.recvmsg(MAX_MESSAGE, _FDS_SPACE)
            fds = [
                fd
                for level, kind, payload in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
                for fd in memoryview(payload[: len(payload) - len(payload) % 4]).cast("i").tolist()
            ]
        except OSError:
            data, fds = b"", []
        if not data:  # the runner closed its end or died: end every task with it
            self._connected = False
            self._stopping = True
            return
        try:
            message = json.loads(data)
            op = message["op"]
            if op == "kill":
                self._kill(message["pid"], message["signal"])
            elif op == "spawn" or (op in ("pool", "warm") and not self._warm):
                self._fork(message, fds)
            else:
                self._send({"op": "error", "id": message.get("id"), "message": f"unknown op {op!r}"})
        finally:
            for fd in fds:
                os.close(fd)

    def _fork(self, message: dict[str, Any], fds: list[int]) -> None:
        expected = {"spawn": 3, "pool": 4}.get(message["op"], 1)
        if len(fds) != expected:
            error = f"expected {expected} descriptors, got {len(fds)}"
            self._send({"op": "error", "id": message["id"], "message": error})
            return
        # Made here, not in the child, which finds it made (see _child.warm_context).
        context = _child.warm_context(message["request"]) if self._warm else None
        _signal.pthread_sigmask(_SIG_BLOCK, _BLOCKED_NUMBERS)
        try:
            # _fork.fork is a Python function: entering it runs any handler already due, so no
            # signal tripped before the mask is inherited half-handled by the child.
            pid = _fork.fork(self._raw)
            if pid == 0:
                self._in_child(message, fds, self._pid, context)
        except OSError as exc:
            self._send({"op": "error", "id": message["id"], "message": f"fork failed: {exc}"})
            return
        finally:
            _signal.pthread_sigmask(_SIG_UNBLOCK, _BLOCKED_NUMBERS)
        self._children.add(pid)
        self._send(b'{"op":"started","id":%d,"pid":%d}' % (message["id"], pid))

    def _in_child(
        self, message: dict[str, Any], fds: list[int], server: int, context: PackageContext | None
    ) -> None:
        code = 70  # EX_SOFTWARE: the child failed before the package could start
        try:
            # SIGKILL, not SIGTERM: with the server gone nobody would collect a graceful ending,
            # and a package's own SIGTERM handler must not keep it running.
            die_with_parent(server, _SIGKILL)
            if message["op"] != "spawn":  # a task's process closes them all with closerange
                self._poll.close()
                self._sock.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
            if message["op"] == "spawn":
                _become_child({fds[0]: 1, fds[1]: 2, fds[2]: _child.EVENT_FD}, _child.EVENT_FD + 1)
                code = _child.run_task(message["request"], reused=False, context=context)
            elif message["op"] == "warm":
                _become_child({fds[0]: POOL_CONTROL_FD}, POOL_CONTROL_FD + 1)
                _devnull_onto(1, 2, _child.EVENT_FD)
                code = _serve_warm(
                    socket.socket(fileno=POOL_CONTROL_FD), message["project_dir"], message["entries"]
                )
            else:
                places = {fds[0]: POOL_CONTROL_FD, fds[1]: 1, fds[2]: 2, fds[3]: _child.EVENT_FD}
                _become_child(places, POOL_CONTROL_FD + 1)
                code = _serve_pool(socket.socket(fileno=POOL_CONTROL_FD))
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    if stream is not None:
                        stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code)

    def _kill(self, pid: int, signum: int) -> None:
        if pid not in self._children:  # already reaped: the pid may belong to someone else now
            return
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            # The child has not reached setsid() yet, so its group does not exist: signal it alone.
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        for _ in range(len(self._children) + 1):
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            os.waitpid(pid, 0)
            self._children.discard(pid)
            code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            self._send(b'{"op":"exited","pid":%d,"code":%d}' % (pid, code))

    def _shutdown(self) -> None:
        if self._sock.fileno() >= 0:
            self._poll.unregister(self._sock.fileno())  # a closed peer would keep it readable
        for signum, wait in ((signal.SIGTERM, SHUTDOWN_GRACE), (signal.SIGKILL, SHUTDOWN_GRACE)):
            for pid in list(self._children):
                self._kill(pid, signum)
            deadline = time.monotonic() + wait
            while self._children and (left := deadline - time.monotonic()) > 0:
                self._poll.poll(min(left, 0.5))
                self._drain_wakeups()
                self._reap()


def _serve_pool(control: socket.socket) -> int:
    """A pooled process: run each task sent over ``control`` until the runner closes it.

    Its pipes (descriptors 1 to 3) are its own for its life. Copies kept aside put them back before
    each task (a package may have closed or redirected them) and carry the task's end mark after
    it: the runner reads a task's output up to that mark, then takes the reply.
    """
    pipes = [os.dup(fd) for fd in (1, 2, _child.EVENT_FD)]
    while True:
        data = control.recv(MAX_MESSAGE)
        if not data:
            return 0
        request = json.loads(data)
        for source, target in zip(pipes, (1, 2, _child.EVENT_FD), strict=True):
            os.dup2(source, target)
        code = _child.run_task(request)
        end = b"\0" + request["end"].encode() + b"\n"
        for fd in pipes:
            _write_all(fd, end)
        control.send(json.dumps({"exit_code": code}).encode())
        if code == _child.TERMINATED_EXIT_CODE:
            return code


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _serve_warm(control: socket.socket, project_dir: str, entries: list[str]) -> int:
    """A warm server: import a project version's ``entries`` once, then fork its task processes.

    A module whose import leaves a thread running or a descriptor open (a connection made at import)
    makes the server unfit: forked children would share that connection, or miss the thread. The
    runner then forks that version's tasks from the fork server, each importing for itself.
    """
    before = _open_fds()
    why = _child.preload(project_dir, entries)
    if why is None and _open_fds() != before:
        why = "its modules keep files or sockets open after their import"
    if why is None and not _fork.single_threaded():
        why = "its modules start threads at import"
    if why is not None:
        control.send(json.dumps({"op": "unfit", "message": why}).encode())
        return 0
    _child.install()
    ForkServer(control, warm=True).serve()
    return 0


def main() -> None:
    """Entry point: ``sys.argv[1]`` is the inherited socket's descriptor."""
    if sys.path and sys.path[0] in ("", os.getcwd()):
        # `python -c` puts the current folder first; tasks must import from their project only.
        del sys.path[0]
    sock = socket.socket(fileno=int(sys.argv[1]))
    ForkServer(sock).serve()
