"""Secrets at rest, end to end: a real master and worker as processes, started with a loose umask.

After a run that passes a sensitive value, the two homes are walked: every file and folder the nodes
created is private to their account, and no file on either node holds the value in plaintext (the
master's catalog holds it sealed; the worker received it only inside TLS and only in memory).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import pg_database
from packfleet.errors import PackageError
from packfleet.localcluster import LocalCluster
from packfleet.packages import build_archive, inspect_archive

SECRET = "tok-9f8e7d-never-on-disk"
PACKAGE = """
import hashlib
from pathlib import Path


def use(ctx):
    token = ctx.parameters["api_token"]
    # Proves the worker got the value without ever writing it anywhere.
    ctx.log.info("token sha256 %s", hashlib.sha256(token.encode()).hexdigest())
    out = Path(ctx.task_dir) / "out" / "result.txt"
    out.parent.mkdir()
    out.write_text("done\\n")
"""


@pytest.fixture
def loose_umask() -> Iterator[None]:
    # The nodes must not depend on the caller's umask: start them from a shell that would share files.
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _project(root: Path) -> Path:
    folder = root / "vault"
    (folder / "vault").mkdir(parents=True)
    (folder / "packfleet.toml").write_text(
        textwrap.dedent(
            """
            [project]
            name = "vault"
            version = "1.0.0"

            [parameters.api_token]
            type = "string"
            default = ""
            sensitive = true

            [packages.use]
            kind = "python"
            entry = "vault.jobs:use"
            """
        )
    )
    (folder / "vault" / "__init__.py").write_text("")
    (folder / "vault" / "jobs.py").write_text(PACKAGE)
    return folder


def _walk(home: Path) -> Iterator[Path]:
    yield home
    for dirpath, dirnames, filenames in os.walk(home):
        for name in [*dirnames, *filenames]:
            yield Path(dirpath) / name


def _open_to_others(home: Path) -> list[str]:
    found = []
    for path in _walk(home):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        if stat.S_IMODE(info.st_mode) & 0o077:
            found.append(f"{path.relative_to(home.parent)} {stat.S_IMODE(info.st_mode):04o}")
    return found


def _holding(home: Path, text: bytes) -> list[str]:
    return [
        str(path.relative_to(home.parent))
        for path in _walk(home)
        if path.is_file() and not path.is_symlink() and text in path.read_bytes()
    ]


@pytest.mark.e2e
def test_node_files_are_private_and_hold_no_plaintext_secret(tmp_path: Path, loose_umask: None) -> None:
    with LocalCluster(tmp_path / "cluster") as cluster:
        cluster.init_master()
        cluster.start_master()
        cluster.add_worker("worker1", "127.0.0.2")
        cluster.start_worker("worker1")
        cluster.wait_for_workers(["worker1"])
        cluster.cli(cluster.master.home, "deploy", str(_project(tmp_path)), as_json=True)
        done = cluster.cli(
            cluster.master.home, "run", "default/vault/use", "--param", f"api_token={SECRET}", "--wait"
        )
        assert done.returncode == 0, done.stdout.decode()
        shown = cluster.cli(cluster.master.home, "executions", "list", as_json=True)
        assert shown[0]["parameters"] == {"api_token": "********"}
        # The package saw the real value: its log line carries the value's digest, not the value.
        execution_id = str(shown[0]["execution_id"])
        logs = cluster.cli(cluster.master.home, "executions", "logs", execution_id, as_json=True)
        digest = hashlib.sha256(SECRET.encode()).hexdigest()
        assert any(digest in line["message"] for line in logs)
        master, worker = cluster.master.home, cluster.workers["worker1"].home
        # Stop the nodes first: the catalog's WAL is then checkpointed and every file is final.
        cluster.close()

    worker_files = {p.name for p in _walk(worker)}
    assert "result.txt" in worker_files  # the walk covers task folders and what packages write
    assert {"catalog.db", "secrets.key"} <= {p.name for p in _walk(master)}
    assert _open_to_others(master) == []
    assert _open_to_others(worker) == []
    assert _holding(master, SECRET.encode()) == []
    assert _holding(worker, SECRET.encode()) == []


@pytest.mark.e2e
@pytest.mark.postgres
def test_a_postgresql_password_never_appears_in_output(tmp_path: Path) -> None:
    password = "pw-Zq9-never-shown"
    with pg_database("pf_sec") as url:
        # The shared server trusts local connections: the password is carried, never needed.
        secret_url = url.replace("postgres@", f"postgres:{password}@")
        with LocalCluster(tmp_path / "cluster", catalog_url=secret_url) as cluster:
            home = cluster.master.home
            shown = [json.dumps(cluster.init_master())]
            cluster.start_master()
            commands = (["settings", "show", "master"], ["settings", "show", "master", "--json"], ["doctor"])
            for args in commands:
                done = cluster.cli(home, *args, check=False)
                shown += [done.stdout.decode(), done.stderr.decode()]
            cluster.close()
            shown.append(cluster.master.log_path.read_text() if cluster.master.log_path else "")
    assert "postgres:***@" in "".join(shown)  # the URL is shown, masked
    assert password not in "".join(shown)


SENSITIVE_DEFAULT = """
[project]
name = "vault"
version = "1.0.0"

[parameters.api_token]
type = "string"
default = "{project_default}"
sensitive = true

[packages.use]
kind = "python"
entry = "vault.jobs:use"
[packages.use.parameters.dsn]
type = "string"
default = "{package_default}"
sensitive = true
"""


def _vault(root: Path, *, project_default: str = "", package_default: str = "") -> Path:
    folder = root / "vault"
    (folder / "vault").mkdir(parents=True)
    text = SENSITIVE_DEFAULT.format(project_default=project_default, package_default=package_default)
    (folder / "packfleet.toml").write_text(text)
    (folder / "vault" / "__init__.py").write_text("")
    (folder / "vault" / "jobs.py").write_text(PACKAGE)
    return folder


@pytest.mark.parametrize(
    ("defaults", "where"),
    [
        ({"project_default": SECRET}, "[parameters.api_token]"),
        ({"package_default": SECRET}, "[packages.use.parameters.dsn]"),
    ],
)
def test_a_secret_written_as_a_default_is_refused_before_it_is_stored(
    tmp_path: Path, defaults: dict[str, str], where: str
) -> None:
    # Nothing seals a default: it would sit in plain text in the archive and in the catalog's manifest.
    with pytest.raises(PackageError) as building:
        build_archive(_vault(tmp_path, **defaults))
    assert where in str(building.value) and "sensitive parameter cannot have a default" in str(building.value)
    assert building.value.fix is not None and "--param" in building.value.fix

    # An archive built by other means is refused at deploy, before the master stores it.
    crafted = io.BytesIO()
    with zipfile.ZipFile(crafted, "w") as archive:
        archive.writestr("packfleet.toml", SENSITIVE_DEFAULT.format(project_default="", package_default=""))
        archive.writestr("vault/__init__.py", "")
        archive.writestr("vault/jobs.py", PACKAGE)
    assert inspect_archive(crafted.getvalue()).name == "vault"  # empty defaults hold no secret
    crafted = io.BytesIO()
    with zipfile.ZipFile(crafted, "w") as archive:
        archive.writestr(
            "packfleet.toml",
            SENSITIVE_DEFAULT.format(**{"project_default": "", "package_default": ""} | defaults),
        )
        archive.writestr("vault/__init__.py", "")
        archive.writestr("vault/jobs.py", PACKAGE)
    with pytest.raises(PackageError, match="sensitive parameter cannot have a default"):
        inspect_archive(crafted.getvalue())


def test_a_sensitive_parameter_without_a_default_deploys(tmp_path: Path) -> None:
    assert build_archive(_vault(tmp_path))  # empty defaults: nothing secret at rest
