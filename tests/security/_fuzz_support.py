"""A throwaway master for the API fuzz run, and the schemathesis command that fuzzes it.

A real master process with one enabled worker (not running, so it takes no task) and the example
project. Two identities speak to it over mutual TLS: the admin certificate for every route, and the
worker's certificate for the worker routes (which refuse an admin with 403 before any logic runs).
Kept out of ``conftest.py`` on purpose: the fuzz run is this module's business alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packfleet.config import load_manager_settings, load_worker_settings
from packfleet.localcluster import LocalCluster
from packfleet.pki import CertStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "etl"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Identity:
    """A certificate and key file the fuzzer presents."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class FuzzTarget:
    """Where the master listens, the certificate that pins it, and who may speak to it."""

    url: str
    ca: Path
    admin: Identity
    worker: Identity
    agent_id: str
    cluster: LocalCluster

    @property
    def schema_url(self) -> str:
        return f"{self.url}/api/v1/openapi.json"


def _identity(home: Path, thumbprint: str) -> Identity:
    store = CertStore(home, "My")
    return Identity(store.cert_path(thumbprint), store.key_path(thumbprint))


@contextmanager
def fuzz_target(root: Path) -> Iterator[FuzzTarget]:
    """Start the throwaway cluster under ``root``; every process is stopped on exit."""
    with LocalCluster(root / "cluster") as cluster:
        cluster.init_master()
        cluster.start_master()
        worker = cluster.add_worker("worker1", "127.0.0.2")
        cluster.cli(cluster.master.home, "deploy", str(EXAMPLE), as_json=True)
        admin = load_manager_settings(cluster.master.home).admin_cert_thumbprint
        yield FuzzTarget(
            url=f"https://{cluster.host}:{cluster.port}",
            ca=cluster.master_pem(),
            admin=_identity(cluster.master.home, admin),
            worker=_identity(worker.home, load_worker_settings(worker.home).worker_https_cert_thumbprint),
            agent_id=cluster.agent_id("worker1"),
            cluster=cluster,
        )


def _schemathesis() -> str:
    beside = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    found = beside or shutil.which("schemathesis")
    if found is None:
        raise RuntimeError("schemathesis is not installed: pip install -e '.[test]'")
    return found


def run_schemathesis(
    target: FuzzTarget,
    identity: Identity,
    *,
    max_examples: int,
    seed: int,
    report: Path,
    include_path_regex: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``schemathesis run`` over mutual TLS with every check, a fixed example budget and seed."""
    argv = [
        _schemathesis(),
        "run",
        target.schema_url,
        "--request-cert", str(identity.cert),
        "--request-cert-key", str(identity.key),
        "--tls-verify", str(target.ca),
        "--checks", "all",
        "--max-examples", str(max_examples),
        "--seed", str(seed),
        "--no-color",
        "--report", "junit",
        "--report-dir", str(report),
        *(["--include-path-regex", include_path_regex] if include_path_regex else []),
    ]  # fmt: skip
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "_fuzz_hooks",
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p),
        "PACKFLEET_FUZZ_AGENT_ID": target.agent_id,
    }
    # Run in the report folder: schemathesis keeps its example cache in the working directory.
    report.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=report, timeout=1200, check=False
    )


def main(argv: list[str]) -> int:
    """A run by hand, printing schemathesis' whole report: ``python _fuzz_support.py DIR [EXAMPLES]``."""
    root = Path(argv[0])
    examples = int(argv[1]) if len(argv) > 1 else 20
    failed = 0
    with fuzz_target(root) as target:
        for name, identity, paths in (
            ("admin", target.admin, None),
            ("worker", target.worker, "^/api/v1/worker/"),
        ):
            done = run_schemathesis(
                target, identity, max_examples=examples, seed=1, report=root / name, include_path_regex=paths
            )
            print(f"===== {name}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
            failed |= done.returncode
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
