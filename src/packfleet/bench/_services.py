"""Server processes a peer of ``bench-peers`` runs (redis-server, a Celery worker, Dask nodes).

Each is a child of the bench, with its output in a log file under the peer's folder (shown when it
fails to come up), and is stopped by its own pid: SIGTERM, then SIGKILL after a bounded wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from packfleet.errors import ClusterError

#: How long a peer server may take to start answering (a loaded 2-core machine is slow).
START_TIMEOUT = 90.0


class Service:
    def __init__(self, name: str, argv: Sequence[str], *, folder: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = folder / f"{name}.log"
        log = self.log_path.open("wb")
        try:
            # A session of its own: SIGTERM to its group stops the pool processes it forks as well.
            self.process = subprocess.Popen(
                list(argv), cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, probe: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Call ``probe`` until it is true; fail with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ClusterError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if probe():
                return
            time.sleep(0.1)
        raise ClusterError(f"{self.name} did not come up within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        # Pool processes left behind by a leader that died first: same group, ended by its id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
