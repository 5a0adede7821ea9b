"""The runner's end of the fork server (see ``_forkserver``), of warm servers and of pooled processes.

Both speak JSON packets over ``SOCK_SEQPACKET`` UNIX sockets: a packet is one message, so there is
no framing to get wrong, and descriptors ride along as ``SCM_RIGHTS``. The sockets are non-blocking
and read with ``loop.add_reader``, so the event loop never waits on them; every wait for an answer
is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from packfleet.errors import PackageError

BOOT = "from packfleet.packages._forkserver import main; main()"
MAX_MESSAGE = 256 * 1024  # the fork server's receive size; a request must fit in one packet
REPLY_TIMEOUT = 10.0
# The fork server gives its children 5 s after SIGTERM and 5 s more after SIGKILL before it exits.
EXIT_TIMEOUT = 15.0
# How long a warm server may take to import a project version's modules before it is given up.
WARM_TIMEOUT = 30.0
_BATCH = 64


def seqpacket_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


async def within(future: asyncio.Future[Any], timeout: float) -> bool:
    """Wait at most ``timeout`` seconds for ``future`` without cancelling it; True when done."""
    if not future.done():
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
    return True


class Channel:
    """A non-blocking SEQPACKET socket on the event loop: ``send`` packets, receive by callback."""

    def __init__(
        self,
        sock: socket.socket,
        on_message: Callable[[dict[str, Any]], None],
        on_close: Callable[[], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._on_message = on_message
        self._on_close = on_close
        self._writable: asyncio.Future[None] | None = None
        self.closed = False
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        for _ in range(_BATCH):  # the loop calls again while data is left; others get their turn
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            self._on_message(json.loads(data))

    async def send(self, message: dict[str, Any] | str, fds: Sequence[int] = ()) -> None:
        """Send one message (a dict, or JSON text already encoded) and ``fds`` beside it."""
        data = (message if isinstance(message, str) else json.dumps(message)).encode()
        if len(data) > MAX_MESSAGE:
            raise PackageError(
                f"the task request is {len(data)} bytes; the limit is {MAX_MESSAGE}",
                fix="pass large inputs as files or connection URLs, not parameter values",
            )
        deadline = self._loop.time() + REPLY_TIMEOUT
        while True:
            if self.closed:
                raise PackageError("the package process channel is closed")
            try:
                socket.send_fds(self._sock, [data], list(fds))
                return
            except (BlockingIOError, InterruptedError):
                if not await within(self._wait_writable(), deadline - self._loop.time()):
                    raise PackageError(
                        f"a package process did not accept a request within {REPLY_TIMEOUT} s"
                    ) from None
            except OSError as exc:
                self.close()
                raise PackageError(f"cannot reach a package process: {exc}") from exc

    def _wait_writable(self) -> asyncio.Future[None]:
        # One shared waiter: add_writer keeps a single callback per descriptor.
        if self._writable is None or self._writable.done():
            waiter: asyncio.Future[None] = self._loop.create_future()

            def ready() -> None:
                self._loop.remove_writer(self._sock.fileno())
                if not waiter.done():
                    waiter.set_result(None)

            self._loop.add_writer(self._sock.fileno(), ready)
            self._writable = waiter
        return self._writable

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_writer(self._sock.fileno())
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._sock.close()
        self._on_close()


@dataclass(frozen=True)
class Child:
    """A process the fork server forked: its pid, and its exit code once reaped.

    ``exited`` resolves with the exit code (negative: the signal that ended it), or None when the
    fork server was lost and the code is unknown. It is created when the fork is reported, before
    any later message is read, so an exit reported in the same batch is never missed.
    """

    pid: int
    exited: asyncio.Future[int | None]


class ServerClient:
    """The runner's end of a server that forks task processes, signals them and reports their exits.

    Spoken by the fork server and by warm servers alike (see ``_forkserver``).
    """

    def __init__(self) -> None:
        self._channel: Channel | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Child]] = {}
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    @property
    def alive(self) -> bool:
        return self._channel is not None and not self._channel.closed

    def _listen(self, sock: socket.socket) -> asyncio.Future[Child]:
        """Read ``sock`` from now on; the future resolves on the server's ``ready``."""
        ready: asyncio.Future[Child] = asyncio.get_running_loop().create_future()
        self._replies[0] = ready
        self._channel = Channel(sock, self._on_message, self._on_lost)
        return ready

    def _on_message(self, message: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        op = message.get("op")
        if op == "exited":
            self._resolve_exit(message["pid"], message["code"])
            return
        first = op in ("ready", "unfit")
        reply = self._replies.pop(0 if first else message.get("id", -1), None)
        if op in ("ready", "started"):
            pid = message["pid"]
            exited: asyncio.Future[int | None] = loop.create_future()
            if op == "started":
                self._exits[pid] = exited
            if reply is not None and not reply.done():
                reply.set_result(Child(pid, exited))
            elif op == "started":  # its requester gave up waiting: end the orphan
                orphan = loop.create_task(self.kill(pid, signal.SIGKILL))
                self._background.add(orphan)
                orphan.add_done_callback(self._background.discard)
        elif reply is not None and not reply.done():
            refused = "is unfit" if op == "unfit" else "refused"
            reply.set_exception(PackageError(f"the server {refused}: {message.get('message')}"))

    def _resolve_exit(self, pid: int, code: int | None) -> None:
        future = self._exits.pop(pid, None)
        if future is not None and not future.done():
            future.set_result(code)

    def _on_lost(self) -> None:
        error = PackageError("the fork server ended unexpectedly")
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(error)
        self._replies.clear()
        for pid in list(self._exits):
            self._resolve_exit(pid, None)

    async def _request(self, message: dict[str, Any] | str, fds: list[int]) -> Child:
        if self._channel is None or self._channel.closed:
            raise PackageError("the fork server is not running", fix="await PackageRunner.start()")
        request_id = next(self._ids)
        reply: asyncio.Future[Child] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        try:
            if isinstance(message, str):  # '{"op": ..., ...' without its closing brace
                message = f'{message},"id":{request_id}}}'
            else:
                message = {**message, "id": request_id}
            await self._channel.send(message, fds)
            if not await within(reply, REPLY_TIMEOUT):
                raise PackageError(f"the fork server did not fork within {REPLY_TIMEOUT} s")
            return reply.result()
        finally:
            self._replies.pop(request_id, None)

    async def spawn(self, request: str, fds: list[int]) -> Child:
        """Fork a task process for ``request`` (JSON text) with ``fds`` as stdout, stderr, events."""
        return await self._request(f'{{"op":"spawn","request":{request}', fds)

    async def kill(self, pid: int, signum: int) -> None:
        """Signal ``pid``'s process group, unless the server has reaped it already."""
        if self._channel is not None and not self._channel.closed:
            await self._channel.send({"op": "kill", "pid": pid, "signal": signum})


class ForkServerClient(ServerClient):
    """Starts the fork server process and asks it to fork, signal and report exits."""

    def __init__(self) -> None:
        super().__init__()
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        ours, theirs = seqpacket_pair()
        with theirs:
            # start_new_session: a Ctrl-C meant for the worker's terminal must not reach the fork
            # server or its tasks; the worker decides how tasks end.
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                BOOT,
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        ready = self._listen(ours)
        if not await within(ready, REPLY_TIMEOUT) or ready.exception() is not None:
            await self.close()
            raise PackageError(
                f"the fork server did not start within {REPLY_TIMEOUT} s ({sys.executable} -c {BOOT!r})",
                fix="run that command by hand to see why packfleet.packages cannot be imported",
            )

    async def spawn_pooled(self, control: socket.socket, pipes: list[int]) -> Child:
        """Fork a pooled process that serves tasks sent over ``control``, writing to ``pipes``."""
        return await self._request({"op": "pool"}, [control.fileno(), *pipes])

    async def warm(self, project_dir: str, entries: Sequence[str]) -> WarmServer:
        """Fork a warm server that has imported ``entries`` of the project in ``project_dir``.

        Raises :class:`PackageError` when it cannot serve (an import failed, left a thread or a
        descriptor behind, or took longer than ``WARM_TIMEOUT``); it has ended then.
        """
        server = WarmServer(self)
        ours, theirs = seqpacket_pair()
        ready = server._listen(ours)
        try:
            with theirs:
                message = {"op": "warm", "project_dir": project_dir, "entries": list(entries)}
                server.process = await self._request(message, [theirs.fileno()])
            if not await within(ready, WARM_TIMEOUT):
                raise PackageError(f"a warm server did not import its modules within {WARM_TIMEOUT} s")
            ready.result()
        except BaseException:
            await server.close()
            raise
        return server

    async def close(self) -> None:
        """Close the socket (the fork server ends its children and exits) and wait for it."""
        if self._channel is not None:
            self._channel.close()
        process, self._process = self._process, None
        if process is None:
            return
        try:
            await asyncio.wait_for(process.wait(), EXIT_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()


class WarmServer(ServerClient):
    """A warm server: the fork server's child that forks one project version's task processes."""

    def __init__(self, parent: ForkServerClient) -> None:
        super().__init__()
        self._parent = parent
        self.process: Child | None = None

    async def close(self) -> None:
        """Close the socket (it ends its children and exits); SIGKILL it if it does not."""
        if self._channel is not None:
            self._channel.close()
        process, self.process = self.process, None
        if process is not None and not await within(process.exited, EXIT_TIMEOUT):
            await self._parent.kill(process.pid, signal.SIGKILL)
