"""A thumbprint one character off gets "did you mean"; a pin missing from its store gets a warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packfleet.cli import main
from packfleet.errors import CertificateNotFound
from packfleet.pki import CertStore, create_self_signed
from packfleet.thumbprint import one_off


def _typo(thumbprint: str, at: int = 7) -> str:
    swapped = "0" if thumbprint[at] != "0" else "1"
    return thumbprint[:at] + swapped + thumbprint[at + 1 :]


def test_one_off_counts_one_change_one_missing_or_one_extra_character() -> None:
    known = "A" * 20 + "B" * 20
    assert one_off(_typo(known), known)
    assert one_off(known[:-1], known) and one_off(known + "C", known)
    assert one_off(known.lower()[:10] + " " + known.lower()[11:], known)  # case and separators aside
    assert not one_off(known, known)
    assert not one_off(_typo(_typo(known), 30), known)


@pytest.mark.parametrize("mangle", [_typo, lambda t: t[:12] + t[13:], lambda t: t[:5] + "A" + t[5:]])
def test_a_near_miss_names_the_certificate_meant(tmp_path: Path, mangle: object) -> None:
    cred = create_self_signed(["worker1"])
    store = CertStore(tmp_path, "My")
    store.add(cred)
    assert callable(mangle)
    typed = mangle(cred.thumbprint)
    with pytest.raises(CertificateNotFound) as caught:
        store.get(typed)
    assert f"did you mean {cred.thumbprint}?" in caught.value.message
    assert caught.value.fix is not None and cred.thumbprint in caught.value.fix


def test_settings_set_warns_when_the_pin_is_not_in_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cred = create_self_signed(["master"])
    CertStore(tmp_path, "Root").add(cred)
    args = ["--home", str(tmp_path), "settings", "set", "manager", "MasterHttpsCertThumbprint"]
    assert main([*args, _typo(cred.thumbprint), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["new"] == _typo(cred.thumbprint)  # saved, as asked
    assert "is not in store Root" in err and f"did you mean {cred.thumbprint}?" in err
    assert main([*args, cred.thumbprint, "--json"]) == 0
    _out, err = capsys.readouterr()
    assert "warning" not in err
