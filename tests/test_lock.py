"""requirements.lock and pyproject.toml agree, so `make test` on a fresh machine installs what we tested.

The lock is what `make demo`, `make test` and CI install (pinned, hash-checked); pyproject.toml keeps the
lower bounds for people who install the wheel. When someone edits one without the other, these tests say
so and name the command that mends it (`make lock`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# The extras `make lock` compiles: everything `make test` and `make bench-peers` need.
LOCKED_EXTRAS = ("test", "postgresql", "bench")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
    return project


def _declared() -> list[Requirement]:
    """What `make lock` resolves: the dependencies and the locked extras, self-references expanded."""
    project = _project()
    name = canonicalize_name(str(project["name"]))
    extras: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    pending = [Requirement(text) for text in project["dependencies"]]  # type: ignore[attr-defined]
    for extra in LOCKED_EXTRAS:
        pending += [Requirement(text) for text in extras[extra]]
    found: list[Requirement] = []
    while pending:
        req = pending.pop()
        if canonicalize_name(req.name) == name:  # "packfleet[postgresql]" inside the test extra
            pending += [Requirement(text) for extra in req.extras for text in extras[extra]]
        else:
            found.append(req)
    return found


def _locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def test_every_declared_dependency_is_locked_at_a_version_it_allows() -> None:
    locked = _locked()
    problems = []
    for req in _declared():
        version = locked.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req} is declared in pyproject.toml but missing from requirements.lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req} is declared in pyproject.toml but requirements.lock pins {version}")
    assert not problems, "\n".join(problems) + "\nrun `make lock` to refresh requirements.lock"


def test_the_lock_names_no_direct_dependency_that_pyproject_dropped() -> None:
    # uv marks each direct requirement "via packfleet (pyproject.toml)"; one left over after its
    # removal from pyproject.toml would still be installed by `make test` and hide a missing import.
    text = (ROOT / "requirements.lock").read_text()
    direct = set()
    for block in re.split(r"\n(?=\S)", text):
        match = _PIN.match(block)
        if match and re.search(r"#\s+(via\s+)?packfleet \(pyproject\.toml\)", block):
            direct.add(canonicalize_name(match[1]))
    declared = {canonicalize_name(req.name) for req in _declared()}
    assert direct <= declared, (
        f"locked as direct but no longer declared: {sorted(direct - declared)}; run `make lock`"
    )


def test_every_pin_carries_hashes() -> None:
    text = (ROOT / "requirements.lock").read_text()
    blocks = [block for block in re.split(r"\n(?=\S)", text) if _PIN.match(block)]
    assert blocks, "requirements.lock pins nothing"
    unhashed = [block.split()[0] for block in blocks if "--hash=sha256:" not in block]
    assert not unhashed, f"pins without hashes (pip --require-hashes refuses them): {unhashed}"


def test_the_makefile_installs_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r $(LOCK)" in makefile
    assert "LOCK := requirements.lock" in makefile


def test_make_lock_compiles_every_locked_extra() -> None:
    # An extra missing from the Makefile's compile line would drop out of the lock at the next
    # `make lock`, and `make bench-peers` (which installs from the lock) would lose its peers.
    makefile = (ROOT / "Makefile").read_text()
    compile_line = next(line for line in makefile.splitlines() if "uv pip compile" in line)
    missing = [extra for extra in LOCKED_EXTRAS if f"--extra {extra}" not in compile_line]
    assert not missing, f"the Makefile's lock target does not compile the extras {missing}"
    assert "bench-peers: $(STAMP)" in makefile  # installed from the lock before it runs
