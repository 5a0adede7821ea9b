"""``settings show`` and ``settings set`` never print the catalog password, as text or as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packfleet.cli import main
from packfleet.config import MasterSettings, load_master_settings, save_master_settings

SECRET = "s3cr3t-Pa55"
URL = f"postgresql+psycopg://packfleet:{SECRET}@127.0.0.1:5432/catalog"
SHOWN = "postgresql+psycopg://packfleet:***@127.0.0.1:5432/catalog"


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("as_json", [False, True])
def test_show_masks_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    save_master_settings(tmp_path, MasterSettings(catalog_url=URL))
    code, out = run(capsys, tmp_path, "settings", "show", "master", *(["--json"] if as_json else []))
    assert code == 0
    assert SECRET not in out
    if as_json:
        assert json.loads(out)["settings"]["CatalogUrl"] == SHOWN
    else:
        assert SHOWN in out


@pytest.mark.parametrize("as_json", [False, True])
def test_set_masks_old_and_new_but_saves_the_real_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    save_master_settings(tmp_path, MasterSettings(catalog_url=URL.replace(SECRET, "old-" + SECRET)))
    extra = ["--json"] if as_json else []
    code, out = run(capsys, tmp_path, "settings", "set", "master", "CatalogUrl", URL, *extra)
    assert code == 0
    assert SECRET not in out
    assert SHOWN in out
    assert load_master_settings(tmp_path).catalog_url == URL
