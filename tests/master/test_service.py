"""`packfleet master install-service`: a hardened systemd unit that reloads on SIGHUP."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from packfleet.cli import cli
from packfleet.master import systemd_unit


def test_the_unit_runs_the_master_of_the_home_with_reload_and_hardening(tmp_path: Path) -> None:
    unit = systemd_unit(tmp_path / "master home", user="packfleet", executable="/usr/bin/packfleet")
    lines = unit.splitlines()
    assert f'ExecStart=/usr/bin/packfleet --home "{tmp_path}/master home" master run' in lines
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert "Restart=on-failure" in lines
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "User=packfleet"):
        assert option in lines
    assert f'ReadWritePaths="{tmp_path}/master home"' in lines
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


def _service(unit: str) -> dict[str, str]:
    lines = unit.split("[Service]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_master_and_worker_units_are_hardened_alike(tmp_path: Path) -> None:
    from packfleet import _systemd
    from packfleet.worker import render_unit

    master = _service(systemd_unit(tmp_path, user="svc", executable="/usr/bin/packfleet"))
    worker = _service(render_unit(tmp_path, user="svc", executable="/usr/bin/packfleet"))
    hardening = {line.split("=", 1)[0] for line in _systemd.HARDENING} | {"ReadWritePaths", "User", "Group"}
    assert {k: master[k] for k in hardening} == {k: worker[k] for k in hardening}
    assert master["ExecStart"].removesuffix(" master run") == worker["ExecStart"].removesuffix(" worker run")
    for key in ("Type", "ExecReload", "Restart", "RestartSec"):
        assert master[key] == worker[key]
    # What differs is how a worker stops: its running packages get their grace period.
    assert (worker["KillMode"], worker["TimeoutStopSec"]) == ("mixed", "90")


def test_install_service_behaves_the_same_for_master_and_worker(tmp_path: Path) -> None:
    outputs = {}
    for role in ("master", "worker"):
        target = tmp_path / role / f"packfleet-{role}.service"
        result = CliRunner().invoke(
            cli,
            [
                "--home",
                str(tmp_path / "home"),
                role,
                "install-service",
                "--user",
                "svc",
                "--output",
                str(target),
            ],
        )
        assert result.exit_code == 0, result.output
        assert target.stat().st_mode & 0o777 == 0o644
        outputs[role] = result.output.replace(role, "ROLE")
        printed = CliRunner().invoke(
            cli, ["--home", str(tmp_path / "home"), role, "install-service", "--output", "-"]
        )
        assert (
            printed.exit_code == 0 and printed.output.startswith("[Unit]\n") and "User=" not in printed.output
        )
    assert outputs["master"] == outputs["worker"]
    assert "systemctl daemon-reload && systemctl enable --now packfleet-ROLE" in outputs["master"]


def test_the_worker_unit_lets_it_write_its_folders_outside_the_home(tmp_path: Path) -> None:
    from packfleet.worker import render_unit

    unit = render_unit(tmp_path / "home", writable=[tmp_path / "home" / "tasks", Path("/srv/pf tasks")])
    assert f'ReadWritePaths={tmp_path}/home "/srv/pf tasks"' in unit.splitlines()
