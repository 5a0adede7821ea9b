"""The package runner: launches tasks in fresh or pooled processes and streams their events.

``fresh`` isolation (the default) forks a new process per task from the fork server, as SSIS runs
each package in its own ``ISServerExec``. ``pooled`` isolation reuses one process per slot for many
small tasks (Celery's ``max_tasks_per_child``): it is recycled after ``max_tasks_per_process`` tasks,
after any failure and after a cancel, so one bad task never poisons the next. When every pooled
slot is busy a pooled task runs in a fresh process rather than queueing behind a long task.

A fresh task is forked from a *warm server* of its project version once there is one: a child of
the fork server that has imported the version's entry modules, so the task's process starts with
its package loaded (and still ends after that one task). The first tasks of a version, and every
task of a version whose modules cannot be imported ahead (see ``_forkserver``), are forked from the
fork server itself and import for themselves, as before. At most ``MAX_WARM`` versions are kept
warm; the one used longest ago, with no task running, makes room.

A fresh task gets three new pipes (stdout, stderr and the event pipe) read on the event loop; it
ends when its process has exited *and* its pipes are drained (bounded: a grandchild that escaped
the process group cannot hold a task open for more than ``DRAIN_TIMEOUT``). A pooled process gets
its three pipes once, for its life: after each task it writes an end mark, unique to that task,
into each of them, and the task ends when its process has replied and the three marks are read::

    runner = PackageRunner()
    await runner.start()
    handle = await runner.launch(spec, events.append)
    result = await handle.wait()          # TaskResult(outcome='succeeded', exit_code=0, ...)
    await runner.close()
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn

from packfleet.errors import PackageError
from packfleet.packages._events import PackageEvent, PipeReader, RunSpec, TaskResult, now
from packfleet.packages._server import (
    REPLY_TIMEOUT,
    Channel,
    ForkServerClient,
    ServerClient,
    WarmServer,
    seqpacket_pair,
    within,
)

DRAIN_TIMEOUT = 5.0
KILL_TIMEOUT = 10.0
CLOSE_GRACE = 5.0
#: Project versions kept warm at once (each warm server is a process of ~15 MB plus its modules).
MAX_WARM = 4
#: Entries one warm server imports at most (a version with more packages runs the rest cold).
MAX_ENTRIES = 32
#: Failed warm-ups after which a version is no longer tried (it runs cold).
MAX_WARM_FAILURES = 3

EventCallback = Callable[[PackageEvent], None]

#: How long a task's "started in process" line waits to be written as one line with its end line.
#: A task that ends sooner, with no output, has one event where it had two: each event costs the
#: worker's journal, the report and the master's catalog a row (make bench: about 7 % of a pooled
#: no-op's CPU). A task still running by then, or writing anything, shows the line as before, with
#: the time its process started.
START_LINE_DELAY = 0.1


class _Task:
    """The runner's record of one running task: its pipes, its exit, its result."""

    def __init__(self, spec: RunSpec, on_event: EventCallback, isolation: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.spec = spec
        self.isolation = isolation
        self.on_event = on_event
        self.pid = 0
        self.exited: asyncio.Future[int | None] = self.loop.create_future()
        self.result: asyncio.Future[TaskResult] = self.loop.create_future()
        self.canceled = False
        self.forced = False
        self.summary: str | None = None
        self.readers: list[PipeReader] = []
        self.pipes_open = 3
        self.finishers: list[Callable[[TaskResult], None]] = []
        #: Futures of the callers waiting in :meth:`TaskHandle.wait`, resolved with the result.
        self.waiters: list[asyncio.Future[None]] = []
        self._drain_timer: asyncio.TimerHandle | None = None
        self._started = time.monotonic()
        self.paused = False
        #: The "started in process" line until it is passed on (see START_LINE_DELAY).
        self._start_line: PackageEvent | None = None
        self._start_timer: asyncio.TimerHandle | None = None

    def attach(self, pid: int, read_fds: list[int]) -> None:
        """Start reading the pipes once the pid is known, so ``started`` is the first event."""
        self._begin(pid)
        kinds: tuple[Literal["stdout", "stderr", "events"], ...] = ("stdout", "stderr", "events")
        for fd, kind in zip(read_fds, kinds, strict=True):
            self.readers.append(
                PipeReader(self.loop, fd, kind, self.emit, self._on_summary, self._on_pipe_closed)
            )

    def adopt(self, pid: int, readers: list[PipeReader], end: bytes) -> None:
        """A pooled task: read the process's pipes, each up to ``end``, the task's own end mark."""
        self._begin(pid)
        self.readers = readers
        for reader in readers:
            reader.expect_end(end)

    def _begin(self, pid: int) -> None:
        self.pid = pid
        name = self.spec.package.name
        self._start_line = PackageEvent(
            now(), "system", logging.INFO, f"package {name!r} started in process {pid} ({self.isolation})"
        )
        self._start_timer = self.loop.call_later(START_LINE_DELAY, self._pass_start_line)

    def _take_start_line(self) -> PackageEvent | None:
        line, self._start_line = self._start_line, None
        if self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = None
        return line

    def _pass_start_line(self) -> None:
        line = self._take_start_line()
        if line is not None:
            self.on_event(line)

    def emit(self, event: PackageEvent) -> None:
        """Pass on one event of the task, after its start line: every event goes through here."""
        if self._start_line is not None:
            self._pass_start_line()
        self.on_event(event)

    def _system(self, level: int, message: str) -> None:
        self.emit(PackageEvent(now(), "system", level, message))

    def _on_pipe_closed(self) -> None:
        self.pipes_open -= 1
        self._maybe_finish()

    def _on_summary(self, message: str) -> None:
        self.summary = message

    def process_exited(self, code: int | None) -> None:
        if self.exited.done():
            return
        self.exited.set_result(code)
        if not self._maybe_finish() and not self.paused:
            self._drain_timer = self.loop.call_later(DRAIN_TIMEOUT, self._stop_draining)

    def pause(self) -> None:
        """Stop reading the pipes (back-pressure); what the package writes waits in them.

        The drain period does not run while paused: the output still in the pipes after the
        process ended is read once reading resumes, not cut off.
        """
        self.paused = True
        for reader in self.readers:
            reader.pause()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        for reader in self.readers:
            reader.resume()
        if self.exited.done() and not self.result.done() and self._drain_timer is None:
            self._drain_timer = self.loop.call_later(DRAIN_TIMEOUT, self._stop_draining)

    def _stop_draining(self) -> None:
        self._system(
            logging.WARNING,
            f"output pipes still open {DRAIN_TIMEOUT} s after the package process ended "
            "(a process outside its group holds them); stopped reading",
        )
        for reader in self.readers:
            reader.close()

    def _maybe_finish(self) -> bool:
        if self.result.done() or not self.exited.done() or self.pipes_open > 0:
            return self.result.done()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        result = self._outcome(self.exited.result())
        level = logging.ERROR if result.outcome == "failed" else logging.INFO
        start = self._take_start_line()
        if start is None:
            self._system(level, result.message)
        else:  # nothing came between: one line, at the time the process started
            self.on_event(PackageEvent(start.time, "system", level, f"{start.message}; {result.message}"))
        self.result.set_result(result)
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        for finisher in self.finishers:
            finisher(result)
        return True

    def _outcome(self, code: int | None) -> TaskResult:
        name = self.spec.package.name
        took = f"{time.monotonic() - self._started:.3f} s"
        if self.canceled:
            how = "killed after the grace period" if self.forced else "stopped by SIGTERM"
            return TaskResult("canceled", code, f"package {name!r} canceled ({how}) after {took}")
        if code is None:
            return TaskResult("failed", None, f"package {name!r}: the fork server ended; exit status unknown")
        if code == 0:
            return TaskResult("succeeded", 0, f"package {name!r} succeeded in {took}")
        if code < 0:
            why = f"killed by {signal.Signals(-code).name}" if -code in _SIGNALS else f"signal {-code}"
        else:
            why = f"exit code {code}"
        detail = f": {self.summary}" if self.summary else ""
        return TaskResult("failed", code, f"package {name!r} failed ({why}){detail}")


_SIGNALS = frozenset(s.value for s in signal.Signals)
log = logging.getLogger("packfleet.packages")


class _PooledProcess:
    """A reused package process, the socket the runner sends it tasks over and its three pipes."""

    def __init__(self, pid: int, control: socket.socket, read_fds: list[int]) -> None:
        self.pid = pid
        self.tasks_run = 0
        self.task: _Task | None = None
        self.alive = True
        self.exit: asyncio.Future[int | None] | None = None
        self.channel = Channel(control, self.on_message, lambda: None)
        loop = asyncio.get_running_loop()
        kinds: tuple[Literal["stdout", "stderr", "events"], ...] = ("stdout", "stderr", "events")
        self.readers = [
            PipeReader(loop, fd, kind, self._emit, self._summary, self._pipe_done)
            for fd, kind in zip(read_fds, kinds, strict=True)
        ]

    # What the pipes carry belongs to the task running; anything between tasks (a helper a task
    # left behind, writing late) to none, and is dropped.
    def _emit(self, event: PackageEvent) -> None:
        if self.task is not None:
            self.task.emit(event)

    def _summary(self, message: str) -> None:
        if self.task is not None:
            self.task._on_summary(message)

    def _pipe_done(self) -> None:
        if self.task is not None:
            self.task._on_pipe_closed()

    @property
    def reusable(self) -> bool:
        return self.alive and not any(reader.closed for reader in self.readers)

    def on_message(self, message: dict[str, Any]) -> None:
        if self.task is not None:
            self.task.process_exited(int(message["exit_code"]))

    def on_exit(self, future: asyncio.Future[int | None]) -> None:
        self.alive = False
        self.channel.close()
        if self.task is not None:
            self.task.process_exited(future.result())
        else:
            self._close_pipes()

    def retire(self) -> None:
        """Close the control socket: the process finishes its loop and exits."""
        self.alive = False
        self.channel.close()
        if self.task is None:
            self._close_pipes()

    def _close_pipes(self) -> None:
        for reader in self.readers:
            reader.close()


class TaskHandle:
    """A launched task: ``pid`` of its process, ``wait()`` for its result, ``cancel()`` it."""

    def __init__(
        self,
        task: _Task,
        kill: Callable[[int], Any],
        process_exit: asyncio.Future[int | None] | None = None,
    ) -> None:
        self._task = task
        self._kill = kill
        # A pooled task ends when its process replies; a cancel also waits for that process to go.
        self._process_exit = process_exit
        self.pid = task.pid

    def __repr__(self) -> str:
        state = self._task.result.result().outcome if self._task.result.done() else "running"
        return f"<TaskHandle task={self._task.spec.task_id} pid={self.pid} {state}>"

    @property
    def done(self) -> bool:
        return self._task.result.done()

    def pause(self) -> None:
        """Stop reading the task's output until :meth:`resume`: the package blocks on its pipes.

        This is back-pressure for a consumer that cannot keep up (a full log cache): the package
        waits rather than its output being read and dropped.
        """
        self._task.pause()

    def resume(self) -> None:
        self._task.resume()

    async def wait(self) -> TaskResult:
        """The task's result, once its process has ended and all its events were delivered.

        Each caller waits on a future of its own, so cancelling one caller cancels nothing else;
        resolved directly when the task ends, it wakes the caller one loop pass sooner than a
        ``shield`` around the shared result, which chains two futures.
        """
        task = self._task
        if not task.result.done():
            waiter: asyncio.Future[None] = task.loop.create_future()
            task.waiters.append(waiter)
            try:
                await waiter
            finally:
                task.waiters.remove(waiter)
        return task.result.result()

    async def cancel(self, grace: float = 5.0) -> None:
        """SIGTERM the task's process group; SIGKILL it if it is still there after ``grace`` s."""
        task = self._task
        if task.exited.done():
            await within(task.result, DRAIN_TIMEOUT + 1)
            return
        task.canceled = True
        await self._kill(signal.SIGTERM)
        if not await within(task.exited, grace):
            task.forced = True
            await self._kill(signal.SIGKILL)
            if not await within(task.exited, KILL_TIMEOUT):
                self._survived()
        await within(task.result, DRAIN_TIMEOUT + 1)
        if self._process_exit is not None and not await within(self._process_exit, grace):
            await self._kill(signal.SIGKILL)
            if not await within(self._process_exit, KILL_TIMEOUT):
                self._survived()

    def _survived(self) -> NoReturn:
        raise PackageError(
            f"process {self.pid} of task {self._task.spec.task_id} survived SIGKILL "
            f"for {KILL_TIMEOUT} s (stuck in the kernel?)"
        )


def _entry(spec: RunSpec) -> str:
    """What a warm server imports ahead for ``spec``: its entry, or SQLAlchemy for SQL packages."""
    entry = spec.package.entry
    return entry if spec.package.kind == "python" and entry else "sqlalchemy"


class _Warm:
    """One project version's warm server: the one serving, the one starting, what they import."""

    def __init__(self) -> None:
        self.server: WarmServer | None = None
        self.starting: asyncio.Task[None] | None = None
        self.entries: list[str] = []
        self.failures = 0
        self.running: dict[WarmServer, int] = {}
        self.used = 0.0

    def busy(self) -> bool:
        return self.starting is not None or any(self.running.values())


class PackageRunner:
    """Runs package tasks in processes forked from one fork server; use from one event loop."""

    def __init__(self, *, pool_size: int = 10) -> None:
        if pool_size < 0:
            raise ValueError("pool_size must be >= 0")
        self._pool_size = pool_size
        self._server: ForkServerClient | None = None
        self._server_lock = asyncio.Lock()
        self._pool: set[_PooledProcess] = set()
        self._idle: list[_PooledProcess] = []
        self._starting = 0
        self._tasks: dict[_Task, TaskHandle] = {}
        self._retired: set[asyncio.Future[int | None]] = set()
        self._warm: dict[str, _Warm] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._closed = False

    async def start(self) -> None:
        """Start the fork server (pooled processes start on first use)."""
        self._closed = False
        await self._ensure_server()

    async def _ensure_server(self) -> ForkServerClient:
        if self._server is not None and self._server.alive:
            return self._server
        async with self._server_lock:
            if self._server is not None and self._server.alive:
                return self._server
            if self._server is not None:  # it died: tidy up, then start a new one
                await self._server.close()
            server = ForkServerClient()
            await server.start()
            self._server = server
            return server

    async def close(self) -> None:
        """Cancel running tasks, stop pooled processes, then stop the fork server."""
        self._closed = True
        handles = list(self._tasks.values())
        await asyncio.gather(*(h.cancel(CLOSE_GRACE) for h in handles), return_exceptions=True)
        for process in list(self._pool):
            self._drop(process)
        for exit_future in list(self._retired):
            await within(exit_future, REPLY_TIMEOUT)
        self._retired.clear()
        for warm in list(self._warm.values()):
            if warm.starting is not None:
                warm.starting.cancel()
                await asyncio.gather(warm.starting, return_exceptions=True)
            for server in list(warm.running):
                await server.close()
        self._warm.clear()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def launch(self, spec: RunSpec, on_event: EventCallback) -> TaskHandle:
        """Start ``spec`` and return at once; ``on_event`` gets each event, in order, on this loop.

        ``on_event`` runs inside the loop's reader callbacks: it must be quick and must not raise.
        """
        if self._closed:
            raise PackageError("the package runner is closed")
        server = await self._ensure_server()
        try:
            request = spec.request_json()
        except (TypeError, ValueError) as exc:
            raise PackageError(f"task {spec.task_id}: parameters are not JSON values: {exc}") from exc
        # The task's process creates its folder when it is missing (the worker made it already).
        process = await self._acquire(server) if spec.package.isolation == "pooled" else None
        task = _Task(spec, on_event, "pooled" if process else "fresh")
        forker: ServerClient = server if process is not None else self._forker(server, spec)
        if process is not None:
            end = secrets.token_hex(8)
            process.task = task
            try:
                # The request with the end mark the process writes to its pipes after this task.
                await process.channel.send(f'{{"end":"{end}",{request[1:]}')
            except BaseException:
                process.task = None
                self._drop(process)
                raise
            task.adopt(process.pid, process.readers, b"\0" + end.encode())
        else:
            pipes = [os.pipe() for _ in range(3)]
            write_fds = [w for _, w in pipes]
            try:
                child = await forker.spawn(request, write_fds)
            except BaseException:
                for r, _ in pipes:
                    os.close(r)
                if isinstance(forker, WarmServer):
                    self._unuse(str(spec.project_dir), forker)
                raise
            finally:
                for w in write_fds:
                    os.close(w)
            child.exited.add_done_callback(lambda f: task.process_exited(f.result()))
            task.attach(child.pid, [r for r, _ in pipes])
        handle = TaskHandle(
            task, self._killer(forker, task.pid), process.exit if process is not None else None
        )
        self._tasks[task] = handle
        task.finishers.append(lambda _: self._forget_task(task))
        if process is not None:
            task.finishers.append(lambda result: self._release(process, task, result))
        elif isinstance(forker, WarmServer):
            task.finishers.append(lambda _: self._unuse(str(spec.project_dir), forker))
        return handle

    async def warm(self, spec: RunSpec) -> bool:
        """Have ``spec``'s project version warm and wait for it; True when its tasks fork warm.

        Not needed before :meth:`launch` (which asks for the warm server itself and runs the first
        tasks cold meanwhile); for callers that want every task of a version to start warm.
        """
        warm = self._want_warm(await self._ensure_server(), spec)
        if warm is None:
            return False
        if warm.starting is not None:
            await asyncio.gather(asyncio.shield(warm.starting), return_exceptions=True)
        current = warm.server
        return current is not None and current.alive and _entry(spec) in warm.entries

    def _forker(self, server: ForkServerClient, spec: RunSpec) -> ServerClient:
        """The warm server of ``spec``'s project version when one serves, else the fork server."""
        warm = self._want_warm(server, spec)
        current = warm.server if warm is not None else None
        if warm is None or current is None:
            return server
        warm.running[current] += 1
        return current

    def _want_warm(self, server: ForkServerClient, spec: RunSpec) -> _Warm | None:
        """The record of ``spec``'s version, starting a warm server in the background if need be.

        One is started when there is none yet, or when ``spec``'s entry is not among the ones the
        serving one imported (the new one imports them all and replaces it once ready).
        """
        key = str(spec.project_dir)
        warm = self._warm.get(key)
        if warm is None:
            if not self._room_for_warm():
                return None
            warm = self._warm[key] = _Warm()
        warm.used = time.monotonic()
        current = warm.server
        if current is not None and not current.alive:  # it died (or the fork server did)
            warm.server, warm.entries = None, []
            warm.failures += 1
        entry = _entry(spec)
        if (
            entry not in warm.entries
            and warm.starting is None
            and warm.failures < MAX_WARM_FAILURES
            and len(warm.entries) < MAX_ENTRIES
        ):
            warm.starting = asyncio.ensure_future(self._start_warm(server, key, warm, [*warm.entries, entry]))
        return warm

    def _room_for_warm(self) -> bool:
        """Whether one more version may be kept warm, making room by retiring an idle one."""
        for key, warm in list(self._warm.items()):
            if warm.server is not None and not warm.server.alive and not warm.busy():
                del self._warm[key]
        if len(self._warm) < MAX_WARM:
            return True
        idle = [(warm.used, key) for key, warm in self._warm.items() if not warm.busy()]
        if not idle:
            return False
        _, key = min(idle)
        for server in self._warm.pop(key).running:
            self._retire_warm(server)
        return True

    async def _start_warm(self, server: ForkServerClient, key: str, warm: _Warm, entries: list[str]) -> None:
        try:
            started = await server.warm(str(Path(key).resolve()), entries)
        except PackageError as exc:
            warm.failures += 1
            if warm.failures >= MAX_WARM_FAILURES or "unfit" in exc.message:
                warm.failures = MAX_WARM_FAILURES  # the same modules would fail the same way
            # Not the task's failure: its tasks run cold, and import (and report) for themselves.
            log.debug("project %s stays cold: %s", key, exc.message)
            return
        finally:
            warm.starting = None
        if self._closed or self._warm.get(key) is not warm:
            await started.close()
            return
        previous, warm.server, warm.entries = warm.server, started, entries
        warm.running[started] = 0
        if previous is not None and not warm.running.get(previous):
            warm.running.pop(previous, None)
            self._retire_warm(previous)

    def _unuse(self, key: str, server: WarmServer) -> None:
        """A task of ``server`` ended: retire it if it has been replaced and was the last one."""
        warm = self._warm.get(key)
        if warm is None or server not in warm.running:
            return
        warm.running[server] -= 1
        if server is not warm.server and warm.running[server] <= 0:
            del warm.running[server]
            self._retire_warm(server)

    def _retire_warm(self, server: WarmServer) -> None:
        retiring = asyncio.ensure_future(server.close())
        self._background.add(retiring)
        retiring.add_done_callback(self._background.discard)

    def _forget_task(self, task: _Task) -> None:
        self._tasks.pop(task, None)

    @staticmethod
    def _killer(server: ServerClient, pid: int) -> Callable[[int], Any]:
        async def kill(signum: int) -> None:
            await server.kill(pid, signum)

        return kill

    async def _acquire(self, server: ForkServerClient) -> _PooledProcess | None:
        while self._idle:
            process = self._idle.pop()  # the most recently used one: its caches are warm
            if process.alive:
                return process
        if len(self._pool) + self._starting >= self._pool_size:
            return None
        self._starting += 1
        ours, theirs = seqpacket_pair()
        pipes = [os.pipe() for _ in range(3)]
        try:
            with theirs:
                child = await server.spawn_pooled(theirs, [w for _, w in pipes])
        except BaseException:
            ours.close()
            for r, _ in pipes:
                os.close(r)
            raise
        finally:
            self._starting -= 1
            for _, w in pipes:
                os.close(w)
        process = _PooledProcess(child.pid, ours, [r for r, _ in pipes])
        process.exit = child.exited
        child.exited.add_done_callback(process.on_exit)
        child.exited.add_done_callback(lambda _: self._forget(process))
        self._pool.add(process)
        return process

    def _release(self, process: _PooledProcess, task: _Task, result: TaskResult) -> None:
        process.task = None
        process.tasks_run += 1
        spent = process.tasks_run >= task.spec.package.max_tasks_per_process
        # A task that ended paused (its consumer stalled) leaves the process's pipes unread: the next
        # task would wait on them, so that process is replaced too.
        if self._closed or not process.reusable or task.paused or result.outcome != "succeeded" or spent:
            self._drop(process)
        else:
            self._idle.append(process)

    def _drop(self, process: _PooledProcess) -> None:
        process.retire()
        if process.exit is not None and not process.exit.done():
            self._retired.add(process.exit)
        self._forget(process)

    def _forget(self, process: _PooledProcess) -> None:
        self._pool.discard(process)
        if process in self._idle:
            self._idle.remove(process)
        if process.exit is not None and process.exit.done():
            self._retired.discard(process.exit)
