"""The package runner: launches tasks in fresh or pooled processes and streams their events.

``fresh`` isolation (the default) forks a new process per task from the fork server, as SSIS runs
each package in its own ``ISServerExec``. ``pooled`` isolation reuses one process per slot for many
small tasks (Celery's ``max_tasks_per_child``): it is recycled after ``max_tasks_per_process`` tasks,
after any failure and after a cancel, so one bad task never poisons the next. When every pooled
slot is busy a pooled task runs in a fresh process rather than queueing behind a long task.

Each task gets three new pipes (stdout, stderr and the event pipe) read on the event loop. A task
ends when its process has exited *and* its pipes are drained (bounded: a grandchild that escaped
the process group cannot hold a task open for more than ``DRAIN_TIMEOUT``)::

    runner = PackageRunner()
    await runner.start()
    handle = await runner.launch(spec, events.append)
    result = await handle.wait()          # TaskResult(outcome='succeeded', exit_code=0, ...)
    await runner.close()
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, Literal, NoReturn

from packfleet.errors import PackageError
from packfleet.packages._events import PackageEvent, PipeReader, RunSpec, TaskResult, now
from packfleet.packages._server import (
    REPLY_TIMEOUT,
    Channel,
    ForkServerClient,
    seqpacket_pair,
    within,
)

DRAIN_TIMEOUT = 5.0
KILL_TIMEOUT = 10.0
CLOSE_GRACE = 5.0

EventCallback = Callable[[PackageEvent], None]


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
        self.finishers: list[Callable[[TaskResult], None]] = []
        self._drain_timer: asyncio.TimerHandle | None = None
        self._started = time.monotonic()
        self.paused = False

    def attach(self, pid: int, read_fds: list[int]) -> None:
        """Start reading the pipes once the pid is known, so ``started`` is the first event."""
        self.pid = pid
        name = self.spec.package.name
        self._system(logging.INFO, f"package {name!r} started in process {pid} ({self.isolation})")
        kinds: tuple[Literal["stdout", "stderr", "events"], ...] = ("stdout", "stderr", "events")
        for fd, kind in zip(read_fds, kinds, strict=True):
            self.readers.append(
                PipeReader(self.loop, fd, kind, self.on_event, self._on_summary, self._on_pipe_closed)
            )

    def _system(self, level: int, message: str) -> None:
        self.on_event(PackageEvent(now(), "system", level, message))

    def _on_pipe_closed(self) -> None:
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
        if self.result.done() or not self.exited.done() or not all(r.closed for r in self.readers):
            return self.result.done()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        result = self._outcome(self.exited.result())
        level = logging.ERROR if result.outcome == "failed" else logging.INFO
        self._system(level, result.message)
        self.result.set_result(result)
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


class _PooledProcess:
    """A reused package process and the socket the runner sends it tasks over."""

    def __init__(self, pid: int, control: socket.socket) -> None:
        self.pid = pid
        self.tasks_run = 0
        self.task: _Task | None = None
        self.alive = True
        self.exit: asyncio.Future[int | None] | None = None
        self.channel = Channel(control, self.on_message, lambda: None)

    def on_message(self, message: dict[str, Any]) -> None:
        if self.task is not None:
            self.task.process_exited(int(message["exit_code"]))

    def on_exit(self, future: asyncio.Future[int | None]) -> None:
        self.alive = False
        self.channel.close()
        if self.task is not None:
            self.task.process_exited(future.result())

    def retire(self) -> None:
        """Close the control socket: the process finishes its loop and exits."""
        self.alive = False
        self.channel.close()


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
        """The task's result, once its process has ended and all its events were delivered."""
        return await asyncio.shield(self._task.result)

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
        self._closed = False

    async def start(self) -> None:
        """Start the fork server (pooled processes start on first use)."""
        self._closed = False
        await self._ensure_server()

    async def _ensure_server(self) -> ForkServerClient:
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
            request = json.loads(json.dumps(spec.request()))
        except (TypeError, ValueError) as exc:
            raise PackageError(f"task {spec.task_id}: parameters are not JSON values: {exc}") from exc
        spec.task_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        process = await self._acquire(server) if spec.package.isolation == "pooled" else None
        task = _Task(spec, on_event, "pooled" if process else "fresh")
        pipes = [os.pipe() for _ in range(3)]
        write_fds = [w for _, w in pipes]
        try:
            if process is None:
                child = await server.spawn(request, write_fds)
                pid = child.pid
                child.exited.add_done_callback(lambda f: task.process_exited(f.result()))
            else:
                process.task = task
                await process.channel.send(request, write_fds)
                pid = process.pid
        except BaseException:
            for r, _ in pipes:
                os.close(r)
            if process is not None:
                process.task = None
                self._drop(process)
            raise
        finally:
            for w in write_fds:
                os.close(w)
        task.attach(pid, [r for r, _ in pipes])
        handle = TaskHandle(task, self._killer(server, pid), process.exit if process is not None else None)
        self._tasks[task] = handle
        task.finishers.append(lambda _: self._forget_task(task))
        if process is not None:
            task.finishers.append(lambda result: self._release(process, task, result))
        return handle

    def _forget_task(self, task: _Task) -> None:
        self._tasks.pop(task, None)

    @staticmethod
    def _killer(server: ForkServerClient, pid: int) -> Callable[[int], Any]:
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
        try:
            with theirs:
                child = await server.spawn_pooled(theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            self._starting -= 1
        process = _PooledProcess(child.pid, ours)
        process.exit = child.exited
        child.exited.add_done_callback(process.on_exit)
        child.exited.add_done_callback(lambda _: self._forget(process))
        self._pool.add(process)
        return process

    def _release(self, process: _PooledProcess, task: _Task, result: TaskResult) -> None:
        process.task = None
        process.tasks_run += 1
        spent = process.tasks_run >= task.spec.package.max_tasks_per_process
        if self._closed or not process.alive or result.outcome != "succeeded" or spent:
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
