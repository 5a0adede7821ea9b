"""Projects, archives and the package runner.

A project is a folder with a ``packfleet.toml``; it travels as a deterministic zip keyed by SHA-256;
a worker runs its packages in processes forked from a lean fork server::

    project = load_project(Path("examples/etl"))
    data = build_archive(Path("examples/etl"))          # same tree -> same bytes -> same SHA-256
    extract_archive(data, home / "projects" / archive_sha256(data))
    values = resolve_parameters(project, "load", {"batch_size": "42"})   # {"batch_size": 42, ...}

    runner = PackageRunner(pool_size=10)
    await runner.start()
    handle = await runner.launch(RunSpec(..., package=project.packages["load"], ...), on_event)
    result = await handle.wait()                        # TaskResult(outcome='succeeded', ...)

The names below load on first use (PEP 562). The fork server imports
``packfleet.packages._forkserver``, which runs this file first; importing asyncio, zipfile and
tomllib here would add ~10 MB to the process every task is forked from, and fork time grows with it.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from packfleet.packages._archive import (
        MAX_ARCHIVE_BYTES,
        MAX_FILES,
        MAX_UNPACKED_BYTES,
        archive_sha256,
        build_archive,
        extract_archive,
        inspect_archive,
    )
    from packfleet.packages._events import PackageEvent, RunSpec, TaskResult
    from packfleet.packages._manifest import (
        MANIFEST_NAME,
        PackageSpec,
        ParameterSpec,
        Project,
        load_project,
        mask_parameters,
        parse_manifest,
        resolve_parameters,
    )
    from packfleet.packages._runner import PackageRunner, TaskHandle

_HOMES = {
    "_archive": (
        "MAX_ARCHIVE_BYTES",
        "MAX_FILES",
        "MAX_UNPACKED_BYTES",
        "archive_sha256",
        "build_archive",
        "extract_archive",
        "inspect_archive",
    ),
    "_events": ("PackageEvent", "RunSpec", "TaskResult"),
    "_manifest": (
        "MANIFEST_NAME",
        "PackageSpec",
        "ParameterSpec",
        "Project",
        "load_project",
        "mask_parameters",
        "parse_manifest",
        "resolve_parameters",
    ),
    "_runner": ("PackageRunner", "TaskHandle"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "MANIFEST_NAME",
    "MAX_ARCHIVE_BYTES",
    "MAX_FILES",
    "MAX_UNPACKED_BYTES",
    "PackageEvent",
    "PackageRunner",
    "PackageSpec",
    "ParameterSpec",
    "Project",
    "RunSpec",
    "TaskHandle",
    "TaskResult",
    "archive_sha256",
    "build_archive",
    "extract_archive",
    "inspect_archive",
    "load_project",
    "mask_parameters",
    "parse_manifest",
    "resolve_parameters",
]


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
