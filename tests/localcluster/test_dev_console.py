"""What ``packfleet dev`` says about the web console: its real port, or why there is none."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

from packfleet.config import MasterSettings, save_master_settings
from packfleet.localcluster import LocalCluster
from packfleet.localcluster._dev import console_lines


def _cluster(tmp_path: Path, *, port: int = 1, enabled: bool = True) -> LocalCluster:
    cluster = LocalCluster(tmp_path / "dev")
    cluster.master.home.mkdir(parents=True)
    cluster.master.log_path = cluster.root / "master.log"  # as starting the master sets it
    settings = dataclasses.replace(
        MasterSettings(), console_enabled=enabled, console_address="127.0.0.1", console_port=port
    )
    save_master_settings(cluster.master.home, settings)
    return cluster


def test_a_listening_console_is_shown_on_its_own_port_with_the_command_adding_a_user(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        cluster = _cluster(tmp_path, port=port)
        url, hint = console_lines(cluster, wait=5.0)
    assert f"https://127.0.0.1:{port}/" in url
    assert (
        f"packfleet --home {cluster.master.home} manager user add admin --role admin --password-stdin" in hint
    )


def test_a_console_that_did_not_start_points_to_the_master_log(tmp_path: Path) -> None:
    with socket.socket() as placeholder:  # a free port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        cluster = _cluster(tmp_path, port=port)
        (line,) = console_lines(cluster, wait=0.5)
    assert f"not started on 127.0.0.1:{port}" in line
    assert str(cluster.root / "master.log") in line
    assert "https://" not in line


def test_no_console_line_when_console_enabled_is_false(tmp_path: Path) -> None:
    assert console_lines(_cluster(tmp_path, enabled=False), wait=0.5) == []
