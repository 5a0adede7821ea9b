"""The CLI applies the admin requests' own rules (``packfleet.protocol``) before it sends anything:
the bounds the master checks are the ones the commands check, not a copy that drifts from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from packfleet.cli import main
from packfleet.errors import InvalidValue
from packfleet.protocol import (
    MAX_IDENTITY_NAME,
    MAX_RETRY_COUNT,
    CreateIdentity,
    CreateToken,
    identity_name_problem,
)

#: Exit code of a usage error (docs/exit-codes.md), click's own and packfleet's UsageError alike.
USAGE = 2


@pytest.mark.parametrize("name", ["tab\tname", "x" * (MAX_IDENTITY_NAME + 1), "   ", "a/b"])
def test_an_identity_name_the_master_refuses_is_refused_before_a_key_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "--home",
            str(tmp_path),
            "manager",
            "identity",
            "create",
            name,
            "--role",
            "viewer",
            "--out",
            str(out),
        ]
    )
    assert code == USAGE
    assert "is not a usable identity name: 1 to 256 characters" in capsys.readouterr().err
    assert not out.exists()  # nothing written: no key for an identity that cannot exist
    with pytest.raises(InvalidValue) as caught:  # the master's refusal: the same words
        CreateIdentity(name, "viewer", "").check()
    assert caught.value.message == identity_name_problem(name)


def test_a_dot_name_is_refused_here_only_because_it_names_the_files(tmp_path: Path) -> None:
    assert identity_name_problem(".alice") is None  # the master takes it
    out = tmp_path / "out"
    args = ["--home", str(tmp_path), "manager", "identity", "create", ".alice", "--role", "viewer"]
    assert main([*args, "--out", str(out)]) == USAGE
    assert not out.exists()


@pytest.mark.parametrize("ttl", ["366d", "0s", "00:00:00"])
def test_a_token_lifetime_out_of_the_masters_bounds_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    assert main(["--home", str(tmp_path), "manager", "token", "create", "--ttl", ttl]) == USAGE
    assert "ttl_seconds must be more than 0 and at most 31536000" in capsys.readouterr().err


def test_the_token_rule_is_one_rule() -> None:
    CreateToken(ttl_seconds=365 * 86400, uses=10_000).check()
    with pytest.raises(InvalidValue, match="uses must be 1..10000"):
        CreateToken(uses=10_001).check()


def test_run_takes_every_retry_count_the_master_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--home", str(tmp_path), "run", "default/etl/load", "--retry"]
    assert main([*args, str(MAX_RETRY_COUNT + 1)]) == USAGE
    assert f"0<=x<={MAX_RETRY_COUNT}" in capsys.readouterr().err
    # Within the protocol's bound the command gets as far as looking for a master (there is none).
    assert main([*args, str(MAX_RETRY_COUNT)]) != USAGE
    assert "no master address" in capsys.readouterr().err
