"""Several master URLs in a worker's and a manager's settings, and ``worker init --master`` repeated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packfleet.cli import main
from packfleet.config import load_master_settings, load_worker_settings, set_setting, split_endpoints
from packfleet.errors import SettingsError
from packfleet.worker import load_identity

M1, M2 = "https://127.0.0.1:8391", "https://127.0.0.5:8391"


def _run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def master(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    home = tmp_path / "master"
    code, _out, err = _run(capsys, home, "master", "init", "--cn", "127.0.0.1", "--cn", "127.0.0.5")
    assert code == 0, err
    return home


def test_worker_init_takes_master_more_than_once_and_the_worker_loads_both(
    master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = tmp_path / "worker"
    code, out, err = _run(
        capsys, worker, "worker", "init", "--master", M1, "--master", M2 + "/", "--master", M1,
        "--master-cert", str(master / "master.cer"), "--name", "w1", "--ip", "127.0.0.2", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert "warning" not in err  # the certificate names both hosts
    assert json.loads(out)["master_endpoint"] == f"{M1},{M2}"
    assert load_worker_settings(worker).master_endpoint == f"{M1},{M2}"
    assert load_identity(worker).settings.master_endpoint == f"{M1},{M2}"


def test_a_host_the_master_certificate_does_not_name_is_named_in_the_warning(
    master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _run(
        capsys, tmp_path / "w", "worker", "init", "--master", M1, "--master", "https://127.0.0.9:8391",
        "--master-cert", str(master / "master.cer"), "--name", "w1", "--ip", "127.0.0.2",
    )  # fmt: skip
    assert code == 0
    assert "127.0.0.9" in err and "'127.0.0.1'" not in err
    with pytest.raises(SettingsError, match=r"MasterEndpoint host '127\.0\.0\.9' is not among"):
        load_identity(tmp_path / "w")


def test_a_bad_url_among_several_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _run(capsys, tmp_path / "w", "worker", "init", "--master", M1, "--master", "http://x:1")
    assert code != 0 and "http://x:1" in err
    assert not (tmp_path / "w" / "WorkerSettings.config").exists()


@pytest.mark.parametrize("kind", ["worker", "manager"])
def test_settings_take_a_comma_separated_list_and_write_it_back_normalised(tmp_path: Path, kind: str) -> None:
    if kind == "worker":
        (tmp_path / "WorkerSettings.config").write_text("{}")
    key, value = set_setting(tmp_path, kind, "MasterEndpoint", f" {M1}/ , {M2},{M1}")  # type: ignore[arg-type]
    assert (key, value) == ("MasterEndpoint", f"{M1},{M2}")
    assert split_endpoints(value) == [M1, M2]


@pytest.mark.parametrize("bad", [f"{M1},", f"{M1},,{M2}", f"{M1},http://m2:8391", f"{M1},https://m2"])
def test_a_list_with_a_bad_or_empty_entry_is_refused_naming_it(tmp_path: Path, bad: str) -> None:
    (tmp_path / "WorkerSettings.config").write_text(json.dumps({"MasterEndpoint": bad}))
    with pytest.raises(SettingsError, match="separated by commas"):
        load_worker_settings(tmp_path)


def test_master_address_stays_a_single_url(tmp_path: Path) -> None:
    (tmp_path / "MasterSettings.config").write_text(json.dumps({"MasterAddress": f"{M1},{M2}"}))
    with pytest.raises(SettingsError, match="MasterAddress"):
        load_master_settings(tmp_path)
