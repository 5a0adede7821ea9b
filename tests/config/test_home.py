"""Which home a command works on: --home, then PACKFLEET_HOME, then the store location's default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from packfleet.config import HOME_ENV, StoreLocation, default_location, resolve_home
from packfleet.errors import SettingsError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("LocalMachine", StoreLocation.LOCAL_MACHINE),
        ("localmachine", StoreLocation.LOCAL_MACHINE),
        (" CURRENTUSER ", StoreLocation.CURRENT_USER),
    ],
)
def test_store_location_parses_case_insensitively(text: str, expected: StoreLocation) -> None:
    assert StoreLocation.parse(text) is expected


def test_store_location_is_its_windows_name() -> None:
    assert str(StoreLocation.LOCAL_MACHINE) == "LocalMachine"
    assert StoreLocation("CurrentUser") is StoreLocation.CURRENT_USER


@pytest.mark.parametrize("text", ["", "Machine", "local_machine", "LocalMachine2"])
def test_unknown_store_location_names_both_choices(text: str) -> None:
    with pytest.raises(SettingsError, match="expected LocalMachine or CurrentUser"):
        StoreLocation.parse(text)


@pytest.mark.parametrize(("euid", "expected"), [(0, "LocalMachine"), (1000, "CurrentUser")])
def test_default_location_follows_root(monkeypatch: pytest.MonkeyPatch, euid: int, expected: str) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    assert default_location() == expected


def test_home_option_wins_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "from-env"))
    assert resolve_home(tmp_path / "given", "LocalMachine") == tmp_path / "given"


def test_environment_wins_over_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "from-env"))
    assert resolve_home(None, StoreLocation.LOCAL_MACHINE) == tmp_path / "from-env"


def test_relative_home_becomes_absolute_and_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    home = resolve_home("nodes/m")
    assert home == tmp_path / "nodes" / "m"
    assert home.is_absolute()
    assert not home.exists()


def test_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_home("~/m") == tmp_path / "m"


def test_location_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_home(None, "LocalMachine") == Path("/var/lib/packfleet")
    assert resolve_home(None, "currentuser") == tmp_path / ".local" / "share" / "packfleet"


def test_empty_values_fall_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_home("", StoreLocation.CURRENT_USER) == tmp_path / ".local" / "share" / "packfleet"


def test_no_location_uses_the_effective_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert resolve_home() == Path("/var/lib/packfleet")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert resolve_home() == tmp_path / ".local" / "share" / "packfleet"


def test_current_user_without_any_home_says_to_pass_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with pytest.raises(SettingsError) as caught:
        resolve_home(None, "CurrentUser")
    assert caught.value.fix == f"pass --home DIR or set {HOME_ENV}"


def test_bad_location_text_is_refused() -> None:
    with pytest.raises(SettingsError):
        resolve_home(None, "Everywhere")
