"""`packfleet master install-service`: a hardened systemd unit that reloads on SIGHUP."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from packfleet.cli import cli
from packfleet.master import systemd_unit


def test_the_unit_runs_the_master_of_the_home_with_reload_and_hardening(tmp_path: Path) -> None:
    unit = systemd_unit(tmp_path / "master home", user="packfleet", executable="/usr/bin/packfleet")
    lines = unit.splitlines()
    assert f"ExecStart=/usr/bin/packfleet --home '{tmp_path}/master home' master run" in lines
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert "Restart=on-failure" in lines
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "User=packfleet"):
        assert option in lines
    assert f"ReadWritePaths='{tmp_path}/master home'" in lines
    assert lines[-1] == "WantedBy=multi-user.target"


def test_install_service_writes_the_unit_and_says_how_to_enable_it(tmp_path: Path) -> None:
    target = tmp_path / "units" / "packfleet-master.service"
    home = tmp_path / "home"
    result = CliRunner().invoke(
        cli, ["--home", str(home), "master", "install-service", "--user", "svc", "--output", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert "systemctl daemon-reload && systemctl enable --now packfleet-master" in result.output
    text = target.read_text()
    assert f"--home {home} master run" in text and "User=svc" in text
    assert target.stat().st_mode & 0o777 == 0o644


def test_install_service_prints_the_unit_with_output_dash(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "master", "install-service", "--output", "-"])
    assert result.exit_code == 0
    assert result.output.startswith("[Unit]\n") and "User=" not in result.output
