"""Fixtures for the pki tests: fresh credentials and certificates made by the `openssl` command."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from packfleet.pki import Credential, create_self_signed

OpenSSL = Callable[..., str]


def run_openssl(*args: str, cwd: Path) -> str:
    """Run `openssl`, failing the test with its stderr when it fails; returns stdout."""
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def openssl_fingerprint(pem_file: Path, digest: str) -> str:
    """`openssl x509 -noout -fingerprint -<digest>` as bare uppercase hex."""
    out = run_openssl(
        "x509", "-noout", "-fingerprint", f"-{digest}", "-in", str(pem_file), cwd=pem_file.parent
    )
    return out.strip().split("=", 1)[1].replace(":", "").upper()


@pytest.fixture
def openssl(tmp_path: Path) -> OpenSSL:
    """`openssl` run in the test's temporary folder."""

    def call(*args: str) -> str:
        return run_openssl(*args, cwd=tmp_path)

    return call


def openssl_req(openssl: OpenSSL, name: str, *extra: str, key: str = "ec") -> tuple[str, str]:
    """`openssl req -x509` a certificate; returns (cert file, key file) names in the temp folder.

    ``key`` is ``ec`` (P-256) or ``rsa:<bits>``; ``extra`` are more `req` arguments (``-addext``...).
    """
    key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key == "ec" else ["-newkey", key]
    openssl(
        "req", "-x509", *key_args, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-subj", f"/CN={name}", "-days", "2", *extra,
    )  # fmt: skip
    return f"{name}.pem", f"{name}.key"


# The extensions packfleet's profile needs, for certificates made by `openssl req -x509` (whose
# default configuration would otherwise add CA:TRUE).
GOOD_EXTS = (
    "-addext", "basicConstraints=critical,CA:FALSE",
    "-addext", "extendedKeyUsage=serverAuth,clientAuth",
)  # fmt: skip


@pytest.fixture
def cred() -> Credential:
    return create_self_signed(["name", "127.0.0.2"])
