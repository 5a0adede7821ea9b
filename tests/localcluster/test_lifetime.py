"""Nodes never outlive what started them: a parent killed with SIGKILL, or stopped with SIGTERM.

Each case runs a small Python program that plays the demo (or a test run) in a process of its own,
so that the test can kill it; the node it starts is a stand-in (``time.sleep``) for ``master run``.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from packfleet._lifetime import die_with_parent

#: Makes a cluster in argv[1] whose nodes are sleepers, starts one, prints its pid.
PRELUDE = """
import os, signal, sys, time
from pathlib import Path
from packfleet.localcluster import LocalCluster, Node, sigterm_exits

def sleeper(cluster):
    cluster.command = lambda home, *args: [sys.executable, "-c", "import time; time.sleep(30)"]
    cluster.workers["sleeper"] = Node("sleeper", cluster.root / "sleeper")
    node = cluster.start_worker("sleeper")
    print(node.process.pid, flush=True)
"""


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def start(program: str, root: Path) -> tuple[subprocess.Popen[str], int]:
    code = PRELUDE + textwrap.dedent(program)
    parent = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line.strip().isdigit(), f"the program printed {line!r}"
    return parent, int(line)


def test_a_node_gets_sigterm_when_the_cluster_process_is_killed(tmp_path: Path) -> None:
    parent, node = start(
        """
        sleeper(LocalCluster(Path(sys.argv[1])))
        os.kill(os.getpid(), signal.SIGKILL)  # no __exit__, no close(): a crash
        """,
        tmp_path,
    )
    try:
        assert parent.wait(10) == -signal.SIGKILL
        assert wait_gone(node), f"node {node} outlived the process that started it"
    finally:
        if not gone(node):
            psutil.Process(node).kill()
        parent.stdout.close()  # type: ignore[union-attr]


def test_sigterm_unwinds_the_cluster_and_stops_its_nodes(tmp_path: Path) -> None:
    parent, node = start(
        """
        with sigterm_exits(), LocalCluster(Path(sys.argv[1])) as cluster:
            sleeper(cluster)
            time.sleep(30)
        """,
        tmp_path,
    )
    try:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(20) == 128 + signal.SIGTERM  # SystemExit: the `with` ran close()
        assert gone(node)  # close() waited for it; nothing left to the parent-death signal
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if not gone(node):
            psutil.Process(node).kill()
        parent.stdout.close()  # type: ignore[union-attr]


def test_sigterm_exits_restores_the_previous_handler() -> None:
    from packfleet.localcluster import sigterm_exits

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_exits():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_child_whose_parent_died_before_prctl_exits_at_once() -> None:
    code = (
        "import signal\n"
        "from packfleet._lifetime import die_with_parent\n"
        "die_with_parent(0, signal.SIGTERM)  # pid 0 is never a parent: as if it had died\n"
        "print('still running')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout) == (128 + signal.SIGTERM, "")


def test_a_signal_the_kernel_refuses_is_an_error_with_its_errno() -> None:
    with pytest.raises(OSError) as refused:
        die_with_parent(os.getppid(), 999)  # no such signal: prctl fails and sets nothing
    assert refused.value.errno == errno.EINVAL
    assert "prctl(PR_SET_PDEATHSIG) failed" in str(refused.value)
