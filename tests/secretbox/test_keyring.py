"""The key file and the sealed form: round trips, binding to the parameter name, refusals."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from packfleet.errors import SecretsError
from packfleet.secretbox import (
    LiveKeyring,
    SecretKeyring,
    is_sealed,
    open_values,
    seal_values,
    sealed_key_id,
    sensitive_names,
)


def test_a_sealed_value_opens_to_the_same_typed_value_and_hides_it(tmp_path: Path) -> None:
    ring = SecretKeyring.generate(tmp_path / "secrets.key")
    for value in ("hunter2", 42, 1.5, True, None, ""):
        sealed = ring.seal("p", value)
        assert is_sealed(sealed) and sealed_key_id(sealed) == ring.current
        assert "hunter2" not in sealed
        assert ring.open("p", sealed) == value
    # A fresh nonce per seal: equal values do not give equal stored text.
    assert ring.seal("p", "x") != ring.seal("p", "x")


def test_a_value_moved_to_another_parameter_or_altered_does_not_open(tmp_path: Path) -> None:
    ring = SecretKeyring.generate(tmp_path / "secrets.key")
    sealed = ring.seal("password", "hunter2")
    with pytest.raises(SecretsError, match="copied from another parameter"):
        ring.open("username", sealed)
    middle = len(sealed) - 20  # inside the ciphertext, clear of the base64 padding
    flipped = sealed[:middle] + ("A" if sealed[middle] != "A" else "B") + sealed[middle + 1 :]
    with pytest.raises(SecretsError, match="altered"):
        ring.open("password", flipped)


def test_the_key_file_is_written_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    ring = SecretKeyring.generate(path)
    ring.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = SecretKeyring.load(path)
    assert again.current == ring.current
    assert again.open("p", ring.seal("p", "v")) == "v"


def test_a_key_file_others_can_read_is_refused_with_the_chmod_fix(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    SecretKeyring.generate(path).save()
    path.chmod(0o644)
    with pytest.raises(SecretsError, match="readable by other accounts") as caught:
        SecretKeyring.load(path)
    assert caught.value.fix == f"chmod 600 {path}"


def test_missing_and_damaged_key_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    with pytest.raises(SecretsError, match="does not exist") as caught:
        SecretKeyring.load(path)
    assert "copy secrets.key" in (caught.value.fix or "")
    path.write_text(json.dumps({"current": "x", "keys": {"x": "AAAA"}}))
    path.chmod(0o600)
    with pytest.raises(SecretsError, match="damaged"):
        SecretKeyring.load(path)


def test_an_unknown_key_id_names_the_key_and_the_file(tmp_path: Path) -> None:
    one = SecretKeyring.generate(tmp_path / "a.key")
    other = SecretKeyring.generate(tmp_path / "b.key")
    with pytest.raises(SecretsError, match=f"sealed with key {one.current}.*b.key"):
        other.open("p", one.seal("p", 1))


def test_rotation_keeps_old_values_readable_until_the_old_key_is_retired(tmp_path: Path) -> None:
    ring = SecretKeyring.generate(tmp_path / "secrets.key")
    old = ring.seal("p", "v")
    rotated = ring.with_new_key()
    assert rotated.current != ring.current and rotated.open("p", old) == "v"
    fresh = rotated.reseal("p", old)
    assert sealed_key_id(fresh) == rotated.current
    assert rotated.reseal("p", fresh) == fresh
    retired = rotated.only_current()
    assert retired.open("p", fresh) == "v"
    with pytest.raises(SecretsError):
        retired.open("p", old)


def test_the_live_key_ring_sees_a_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    ring = SecretKeyring.generate(path)
    ring.save()
    live = LiveKeyring(path)
    assert live.get().current == ring.current
    newer = ring.with_new_key()
    newer.save()
    assert live.get().current == newer.current


def test_sensitive_names_follow_package_overrides() -> None:
    manifest = {
        "parameters": [
            {"name": "password", "sensitive": True},
            {"name": "rows", "sensitive": False},
            {"name": "token", "sensitive": True},
        ],
        "packages": [
            {
                "name": "load",
                "parameters": [{"name": "token", "sensitive": False}, {"name": "k", "sensitive": True}],
            },
            {"name": "other", "parameters": []},
        ],
    }
    assert sensitive_names(manifest, "load") == {"password", "k"}
    assert sensitive_names(manifest, "other") == {"password", "token"}


def test_seal_and_open_values_touch_only_the_sensitive_ones(tmp_path: Path) -> None:
    ring = SecretKeyring.generate(tmp_path / "secrets.key")
    stored = seal_values(ring, {"password": "hunter2", "rows": 10}, {"password"})
    assert stored["rows"] == 10 and is_sealed(stored["password"])
    assert open_values(ring, stored) == {"password": "hunter2", "rows": 10}
    # A value that only looks sealed is sealed again: it opens to exactly what was given.
    lookalike = stored["password"]
    again = seal_values(ring, {"password": lookalike}, {"password"})
    assert open_values(ring, again) == {"password": lookalike}
