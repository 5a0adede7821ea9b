"""The fleet benchmark's agent identities: keys 0600 from the first byte, trusted by the master."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from packfleet.bench._fleet import make_agents
from packfleet.pki import CertStore


@dataclass
class StubBench:
    """What make_agents uses of a BenchCluster: the master home, and a pid to send SIGHUP to."""

    master_home: Path
    process: subprocess.Popen[bytes]

    def master_pid(self) -> int:
        return self.process.pid


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[StubBench]:
    # Stands in for the master: it only has to receive the SIGHUP that reloads the Root store.
    code = (
        "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); print(flush=True); time.sleep(30)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()  # the handler is in place
    try:
        yield StubBench(tmp_path / "master", process)
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()


def test_agent_keys_are_never_readable_by_others(
    bench: StubBench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key written with Path.write_bytes and chmod-ed afterwards is 0644 (umask 022) in between.
    modes_after_write: list[int] = []
    real_write_bytes = Path.write_bytes

    def write_bytes(path: Path, data: bytes) -> int:
        written = real_write_bytes(path, data)
        if path.suffix == ".key":
            modes_after_write.append(stat.S_IMODE(path.stat().st_mode))
        return written

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    previous = os.umask(0o022)
    try:
        agents = make_agents(bench, 3, tmp_path / "fleet")  # type: ignore[arg-type]
    finally:
        os.umask(previous)

    assert all(mode == 0o600 for mode in modes_after_write), [oct(m) for m in modes_after_write]
    assert len(agents) == 3
    root = CertStore(bench.master_home, "Root")
    for cert, key, _agent in agents:
        assert stat.S_IMODE(Path(key).stat().st_mode) == 0o600
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
        assert root.contains(Path(cert).stem)
    assert bench.process.poll() is None  # the SIGHUP went to the pid it was given
