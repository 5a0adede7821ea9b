"""What a user installing the wheel gets: declared dependencies that are used, the licence, the sample."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from packfleet import __version__
from packfleet.catalog import Catalog
from packfleet.cli import main
from packfleet.errors import CatalogError
from packfleet.localcluster import sample_project

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "packfleet"


def _pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _imported_top_level_modules() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        if "examples" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def _runtime_requirements() -> list[Requirement]:
    project: dict[str, object] = _pyproject()["project"]  # type: ignore[assignment]
    extras: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    return [Requirement(text) for text in [*project["dependencies"], *extras["postgresql"]]]  # type: ignore[misc]


def test_every_runtime_dependency_is_imported_by_packfleet() -> None:
    imported = _imported_top_level_modules()
    provided_by: dict[str, list[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            provided_by.setdefault(dist.lower().replace("_", "-"), []).append(module)
    unused = []
    for req in _runtime_requirements():
        modules = provided_by.get(req.name.lower().replace("_", "-"), [])
        assert modules, f"{req.name} is declared but not installed"
        if not imported.intersection(modules):
            unused.append(req.name)
    assert not unused, f"declared in pyproject.toml but imported nowhere in src/packfleet: {unused}"


def test_the_licence_file_matches_the_declared_licence() -> None:
    project: dict[str, object] = _pyproject()["project"]  # type: ignore[assignment]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_version_is_one_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert metadata.version("packfleet") == __version__
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"packfleet, version {__version__}"


def test_the_sample_project_ships_inside_the_package() -> None:
    project = sample_project()
    assert project.is_relative_to(SRC)
    assert (project / "packfleet.toml").is_file()
    assert (project / "etl" / "load.py").is_file()


def test_a_postgresql_catalog_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # `None` in sys.modules makes `import psycopg` raise ImportError, as on an install without the extra.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(CatalogError, match="postgresql` extra") as caught:
        Catalog.open("postgresql://packfleet@127.0.0.1:5432/test", connect_timeout=2)
    assert caught.value.fix == "pip install 'packfleet[postgresql]'"
