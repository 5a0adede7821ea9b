"""Folders, projects and their deployed versions (SSIS ``catalog.folders``, ``projects``, ``packages``).

As in SSISDB, every deployment is kept as a new version with its archive, and an execution is
pinned to the version that was newest when it was created, so redeploying never changes what an
already-queued execution runs. Workers fetch archives by SHA-256, which makes them cacheable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Select, func, select

from packfleet.catalog._base import CatalogBase
from packfleet.catalog._records import PackageRecord, ProjectVersionRecord
from packfleet.catalog._schema import folders, packages, project_versions, projects
from packfleet.errors import InvalidValue, NotFound

_DEPLOY_FIX = "packfleet deploy <project folder> [--folder NAME]"


def _name(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit or "/" in value:
        raise InvalidValue(
            f"{value!r} is not a valid {what} name: it must be 1 to {limit} characters without '/'",
            fix=f"fix the {what} name (in packfleet.toml for a project) and deploy again",
        )
    return value


def manifest_packages(manifest: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, kind, spec)`` of each package in a project manifest.

    Takes ``packages`` as a list of tables with a ``name`` (the TOML array-of-tables form) or as a
    table keyed by name; a package without ``kind`` is a ``python`` package, as in packfleet.toml.
    """
    raw = manifest.get("packages")
    items: Iterable[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        items = raw.items()
    elif isinstance(raw, list):
        items = [(p.get("name") if isinstance(p, Mapping) else None, p) for p in raw]
    else:
        items = []
    found: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for name, spec in items:
        if not isinstance(spec, Mapping):
            raise InvalidValue(f"package {name!r} of the manifest is not a table")
        package = _name(name, "package", 256)
        if package in found:
            raise InvalidValue(f"the manifest names package {package!r} twice")
        body = {**spec, "name": package}
        found[package] = (package, str(spec.get("kind", "python")), body)
    if not found:
        raise InvalidValue(
            f"project {manifest.get('name')!r} has no packages",
            fix="declare at least one [[packages]] entry in packfleet.toml",
        )
    return list(found.values())


def _version_columns() -> Select[Any]:
    return (
        select(
            project_versions.c.id,
            folders.c.name.label("folder"),
            projects.c.name.label("project"),
            project_versions.c.version,
            project_versions.c.sha256,
            func.length(project_versions.c.archive).label("size"),
            project_versions.c.manifest,
            project_versions.c.deployed_at,
            project_versions.c.deployed_by,
        )
        .select_from(project_versions)
        .join(projects, projects.c.id == project_versions.c.project_id)
        .join(folders, folders.c.id == projects.c.folder_id)
    )


class ProjectCatalog(CatalogBase):
    """Deploying projects and reading their versions and archives."""

    def _records(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[ProjectVersionRecord]:
        by_version: dict[int, list[PackageRecord]] = {row.id: [] for row in rows}
        if by_version:
            for pkg in conn.execute(
                select(packages)
                .where(packages.c.project_version_id.in_(list(by_version)))
                .order_by(packages.c.id)
            ):
                by_version[pkg.project_version_id].append(PackageRecord(pkg.name, pkg.kind, dict(pkg.spec)))
        return [
            ProjectVersionRecord(
                id=row.id,
                folder=row.folder,
                project=row.project,
                version=row.version,
                description=str(row.manifest.get("description", "")),
                sha256=row.sha256,
                size=int(row.size),
                manifest=dict(row.manifest),
                packages=tuple(by_version[row.id]),
                deployed_at=row.deployed_at,
                deployed_by=row.deployed_by,
            )
            for row in rows
        ]

    def _get_or_create(self, conn: Connection, table: Any, **key: Any) -> int:
        # INSERT .. ON CONFLICT DO NOTHING then SELECT: two masters deploying into a new folder at
        # once both succeed instead of one failing on the unique constraint.
        conn.execute(self._insert(table).values(created_at=self.now(), **key).on_conflict_do_nothing())
        query = select(table.c.id).where(*(table.c[k] == v for k, v in key.items()))
        return int(conn.execute(query.with_for_update()).scalar_one())

    def deploy_project(
        self, folder: str, manifest: Mapping[str, Any], archive: bytes, *, actor: str
    ) -> ProjectVersionRecord:
        """Store a new version of the project described by ``manifest``, creating ``folder``.

        ``manifest`` is ``packfleet.packages.Project.to_dict()``; the archive is kept with its
        SHA-256 (lowercase hex), by which workers download it.
        """
        folder = _name(folder, "folder", 128)
        project = _name(manifest.get("name"), "project", 128)
        found = manifest_packages(manifest)
        sha256 = hashlib.sha256(archive).hexdigest()
        with self._write() as conn:
            folder_id = self._get_or_create(conn, folders, name=folder)
            project_id = self._get_or_create(conn, projects, folder_id=folder_id, name=project)
            latest = conn.scalar(
                select(func.max(project_versions.c.version)).where(
                    project_versions.c.project_id == project_id
                )
            )
            version = int(latest or 0) + 1
            version_id = conn.execute(
                project_versions.insert()
                .values(
                    project_id=project_id,
                    version=version,
                    archive=archive,
                    sha256=sha256,
                    manifest=dict(manifest),
                    deployed_at=self.now(),
                    deployed_by=actor,
                )
                .returning(project_versions.c.id)
            ).scalar_one()
            conn.execute(
                packages.insert(),
                [{"project_version_id": version_id, "name": n, "kind": k, "spec": s} for n, k, s in found],
            )
            details = {"version": version, "sha256": sha256, "size": len(archive)}
            details["packages"] = [n for n, _, _ in found]
            self._audit(conn, actor, "project.deploy", f"{folder}/{project}", details)
            rows = conn.execute(_version_columns().where(project_versions.c.id == version_id)).all()
            return self._records(conn, rows)[0]

    def list_projects(self, folder: str | None = None) -> list[ProjectVersionRecord]:
        """The newest version of every project (of ``folder``, or of all folders)."""
        newest = select(func.max(project_versions.c.id)).group_by(project_versions.c.project_id)
        query = _version_columns().where(project_versions.c.id.in_(newest))
        if folder is not None:
            query = query.where(folders.c.name == folder)
        with self._read() as conn:
            rows = conn.execute(query.order_by(folders.c.name, projects.c.name)).all()
            return self._records(conn, rows)

    def get_project_version(
        self, folder: str, project: str, version: int | None = None
    ) -> ProjectVersionRecord:
        """A version of a project (the newest when ``version`` is None); NotFound says what exists."""
        query = _version_columns().where(folders.c.name == folder, projects.c.name == project)
        if version is not None:
            query = query.where(project_versions.c.version == version)
        with self._read() as conn:
            row = conn.execute(query.order_by(project_versions.c.version.desc()).limit(1)).first()
            if row is None:
                raise self._missing_project(conn, folder, project, version)
            return self._records(conn, [row])[0]

    def get_project_version_by_id(self, version_id: int) -> ProjectVersionRecord:
        """The project version with catalog id ``version_id`` (an execution's ``project_version_id``)."""
        with self._read() as conn:
            rows = conn.execute(_version_columns().where(project_versions.c.id == version_id)).all()
            if not rows:
                raise NotFound(f"no project version with id {version_id}", fix="packfleet projects list")
            return self._records(conn, rows)[0]

    def _missing_project(self, conn: Connection, folder: str, project: str, version: int | None) -> NotFound:
        versions = conn.scalars(
            select(project_versions.c.version)
            .join(projects, projects.c.id == project_versions.c.project_id)
            .join(folders, folders.c.id == projects.c.folder_id)
            .where(folders.c.name == folder, projects.c.name == project)
            .order_by(project_versions.c.version)
        ).all()
        if versions:
            known = ", ".join(str(v) for v in versions)
            return NotFound(
                f"project {folder}/{project} has no version {version} (it has {known})",
                fix="packfleet projects list",
            )
        names = conn.scalars(
            select(projects.c.name)
            .join(folders, folders.c.id == projects.c.folder_id)
            .where(folders.c.name == folder)
            .order_by(projects.c.name)
        ).all()
        known = ", ".join(names) if names else "none"
        return NotFound(
            f"no project {project!r} in folder {folder!r} (projects there: {known})",
            fix=_DEPLOY_FIX,
        )

    def get_archive(self, sha256: str) -> bytes:
        """The project archive whose SHA-256 is ``sha256`` (hex, any case)."""
        with self._read() as conn:
            data = conn.scalar(
                select(project_versions.c.archive)
                .where(project_versions.c.sha256 == sha256.strip().lower())
                .limit(1)
            )
        if data is None:
            raise NotFound(f"no deployed project archive has SHA-256 {sha256}", fix=_DEPLOY_FIX)
        return bytes(data)
