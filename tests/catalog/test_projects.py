"""Deploying projects: versions, archives by SHA-256, what a missing project says."""

from __future__ import annotations

import hashlib

import pytest

from packfleet.catalog import Catalog
from packfleet.errors import CatalogError, NotFound

from .conftest import MANIFEST


def test_each_deploy_is_a_new_version_with_its_archive(catalog: Catalog) -> None:
    v1 = catalog.deploy_project("default", MANIFEST, b"archive one", actor="alice")
    v2 = catalog.deploy_project("default", MANIFEST, b"archive two", actor="bob")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.sha256 == hashlib.sha256(b"archive one").hexdigest()
    assert (v2.size, v2.deployed_by, v2.description) == (len(b"archive two"), "bob", "nightly loads")
    assert [(p.name, p.kind) for p in v2.packages] == [("extract", "python"), ("load", "sql")]
    assert v2.manifest == MANIFEST
    assert catalog.get_archive(v1.sha256) == b"archive one"
    assert catalog.get_archive(v2.sha256.upper()) == b"archive two"
    assert catalog.get_project_version("default", "etl").version == 2
    assert catalog.get_project_version("default", "etl", 1).sha256 == v1.sha256
    audit = [r for r in catalog.list_audit() if r.action == "project.deploy"]
    assert [(r.actor, r.target, r.details["version"]) for r in audit] == [
        ("alice", "default/etl", 1),
        ("bob", "default/etl", 2),
    ]


def test_list_projects_shows_the_newest_version_of_each(catalog: Catalog) -> None:
    catalog.deploy_project("default", MANIFEST, b"1", actor="a")
    catalog.deploy_project("default", MANIFEST, b"2", actor="a")
    catalog.deploy_project("default", {**MANIFEST, "name": "crm"}, b"3", actor="a")
    catalog.deploy_project("finance", MANIFEST, b"4", actor="a")
    listed = [(p.folder, p.project, p.version) for p in catalog.list_projects()]
    assert listed == [("default", "crm", 1), ("default", "etl", 2), ("finance", "etl", 1)]
    assert [p.project for p in catalog.list_projects("finance")] == ["etl"]
    assert catalog.list_projects("empty") == []


def test_packages_may_be_a_table_keyed_by_name(catalog: Catalog) -> None:
    manifest = {"name": "kv", "packages": {"only": {"entry": "m:f"}}}
    record = catalog.deploy_project("default", manifest, b"z", actor="a")
    [package] = record.packages
    assert (package.name, package.kind, dict(package.spec)) == (
        "only",
        "python",
        {"entry": "m:f", "name": "only"},
    )


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ({"name": "x", "packages": []}, "has no packages"),
        ({"name": "a/b", "packages": [{"name": "p"}]}, "not a valid project name"),
        ({"packages": [{"name": "p"}]}, "not a valid project name"),
        ({"name": "x", "packages": [{"name": "p"}, {"name": "p"}]}, "names package 'p' twice"),
        ({"name": "x", "packages": ["p"]}, "is not a table"),
    ],
)
def test_bad_manifests_are_refused(catalog: Catalog, manifest: dict[str, object], words: str) -> None:
    with pytest.raises(CatalogError, match=words):
        catalog.deploy_project("default", manifest, b"z", actor="a")
    assert catalog.list_projects() == []


def test_missing_projects_and_versions_say_what_exists(catalog: Catalog) -> None:
    catalog.deploy_project("default", MANIFEST, b"1", actor="a")
    with pytest.raises(NotFound, match=r"has no version 7 \(it has 1\)"):
        catalog.get_project_version("default", "etl", 7)
    with pytest.raises(NotFound, match=r"projects there: etl"):
        catalog.get_project_version("default", "crm")
    with pytest.raises(NotFound, match=r"projects there: none"):
        catalog.get_project_version("nowhere", "etl")
    with pytest.raises(NotFound, match="SHA-256"):
        catalog.get_archive("0" * 64)
    with pytest.raises(CatalogError, match="not a valid folder name"):
        catalog.deploy_project("", MANIFEST, b"1", actor="a")
