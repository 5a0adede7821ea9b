"""Projects: ``packfleet.toml`` read strictly into typed, JSON-round-trippable specs.

A project is what SSIS calls a project deployment: packages plus typed parameters, deployed and
versioned together. Project parameters (SSIS ``$Project::``) are seen by every package; package
parameters (``$Package::``) by one package only. packfleet runs them with one flat namespace, so a
package parameter may not reuse a project parameter's name::

    [project]
    name = "etl"
    version = "1.0.0"

    [packages.load]
    kind = "python"
    entry = "etl.load:main"

Every error names the file, the table and key, and what is wrong, e.g. ``packfleet.toml:
[packages.load] key 'entry': expected 'module:function', got 'etl.load'``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

from packfleet.errors import PackageError

MANIFEST_NAME = "packfleet.toml"
MASK = "********"

ParameterType = Literal["string", "int", "float", "bool"]
PackageKind = Literal["python", "sql"]
Isolation = Literal["fresh", "pooled"]
ParameterValue = str | int | float | bool
_T = TypeVar("_T")
_C = TypeVar("_C", bound=str)

PARAMETER_TYPES: tuple[ParameterType, ...] = ("string", "int", "float", "bool")
PACKAGE_KINDS: tuple[PackageKind, ...] = ("python", "sql")
ISOLATIONS: tuple[Isolation, ...] = ("fresh", "pooled")
DEFAULT_MAX_TASKS_PER_PROCESS = 100

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
# The spellings people type on a command line for a bool (``--param debug=yes``).
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

_PROJECT_KEYS = ("name", "version", "description")
_PARAMETER_KEYS = ("type", "default", "sensitive", "required")
_PACKAGE_KEYS = (
    "kind",
    "entry",
    "file",
    "connection",
    "isolation",
    "max_tasks_per_process",
    "parameters",
)
_TOP_KEYS = ("project", "parameters", "packages")
# PackageSpec.from_wire's specs, by name, entry and file: the spec as received (a copy) and its object.
_WIRE_SPECS: dict[tuple[Any, Any, Any], tuple[dict[str, Any], PackageSpec]] = {}
_WIRE_SPECS_KEPT = 64


@dataclass(frozen=True)
class ParameterSpec:
    """A typed parameter; ``required`` is true when it has no default."""

    name: str
    type: ParameterType
    default: ParameterValue | None = None
    sensitive: bool = False
    required: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "sensitive": self.sensitive,
            "required": self.required,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParameterSpec:
        where = f"parameter {data.get('name')!r}" if isinstance(data, Mapping) else "parameter"
        return _from_dict(where, lambda: cls._from_dict(data))

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> ParameterSpec:
        ptype = data["type"]
        if ptype not in PARAMETER_TYPES:
            raise ValueError(f"unknown type {ptype!r}")
        default = data["default"]
        if default is not None:
            default = coerce_value(ptype, default)
        return cls(
            name=_checked_str(data["name"]),
            type=ptype,
            default=default,
            sensitive=bool(data["sensitive"]),
            required=bool(data["required"]),
        )


@dataclass(frozen=True)
class PackageSpec:
    """One package of a project, as the master sends it to a worker (``to_dict`` is JSON)."""

    name: str
    kind: PackageKind
    entry: str | None = None
    file: str | None = None
    connection: str | None = None
    isolation: Isolation = "fresh"
    max_tasks_per_process: int = DEFAULT_MAX_TASKS_PER_PROCESS
    parameters: dict[str, ParameterSpec] = field(default_factory=dict)

    @functools.cached_property
    def json_text(self) -> str:
        """:meth:`to_dict` as JSON, encoded once: a worker sends it with every task of the package
        (encoding it for each was about 4% of a busy worker's time, py-spy, ``make bench``)."""
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "entry": self.entry,
            "file": self.file,
            "connection": self.connection,
            "isolation": self.isolation,
            "max_tasks_per_process": self.max_tasks_per_process,
            "parameters": [p.to_dict() for p in self.parameters.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackageSpec:
        where = f"package {data.get('name')!r}" if isinstance(data, Mapping) else "package"
        return _from_dict(where, lambda: cls._from_dict(data))

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> PackageSpec:
        """:meth:`from_dict` of a spec a worker was leased, the same object again for an equal spec.

        Every task of a package version comes with the same spec: checking and building it again
        for each was about 3% of a busy worker's time (py-spy, ``make bench``). Reusing one object
        also lets the runner encode it once (:attr:`json_text`). A spec equal to a
        remembered one (compared whole) is that one; any other is checked as by :meth:`from_dict`.
        """
        if not isinstance(data, Mapping):
            return cls.from_dict(data)
        key = (data.get("name"), data.get("entry"), data.get("file"))
        known = _WIRE_SPECS.get(key)
        if known is not None and known[0] == data:
            return known[1]
        spec = cls.from_dict(data)
        if len(_WIRE_SPECS) >= _WIRE_SPECS_KEPT:
            _WIRE_SPECS.pop(next(iter(_WIRE_SPECS)))  # the oldest: a worker runs a few packages at a time
        _WIRE_SPECS[key] = (copy.deepcopy(dict(data)), spec)
        return spec

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> PackageSpec:
        if data["kind"] not in PACKAGE_KINDS or data["isolation"] not in ISOLATIONS:
            raise ValueError(f"unknown kind {data['kind']!r} or isolation {data['isolation']!r}")
        maximum = data["max_tasks_per_process"]
        if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 1:
            raise ValueError("max_tasks_per_process must be a whole number >= 1")
        parameters = [ParameterSpec._from_dict(p) for p in data["parameters"]]
        return cls(
            name=_checked_str(data["name"]),
            kind=data["kind"],
            entry=_optional_str(data["entry"]),
            file=_optional_str(data["file"]),
            connection=_optional_str(data["connection"]),
            isolation=data["isolation"],
            max_tasks_per_process=maximum,
            parameters={p.name: p for p in parameters},
        )


@dataclass(frozen=True)
class Project:
    """A parsed ``packfleet.toml``: project parameters and packages, both keyed by name."""

    name: str
    version: str
    description: str = ""
    parameters: dict[str, ParameterSpec] = field(default_factory=dict)
    packages: dict[str, PackageSpec] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "parameters": [p.to_dict() for p in self.parameters.values()],
            "packages": [p.to_dict() for p in self.packages.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Project:
        where = f"project {data.get('name')!r}" if isinstance(data, Mapping) else "project"
        return _from_dict(where, lambda: cls._from_dict(data))

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> Project:
        parameters = [ParameterSpec._from_dict(p) for p in data["parameters"]]
        packages = [PackageSpec._from_dict(p) for p in data["packages"]]
        return cls(
            name=_checked_str(data["name"]),
            version=_checked_str(data["version"]),
            description=_checked_str(data["description"]),
            parameters={p.name: p for p in parameters},
            packages={p.name: p for p in packages},
        )


def _from_dict(where: str, build: Callable[[], _T]) -> _T:
    try:
        return build()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PackageError(
            f"malformed {where} document: {type(exc).__name__}: {exc}",
            fix="redeploy the project so the master stores a current description",
        ) from exc


def _checked_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _optional_str(value: object) -> str | None:
    return None if value is None else _checked_str(value)


def closest(name: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class _Reader:
    """Reads one TOML table, naming the file and table in every error it raises."""

    def __init__(self, source: str, table: str, data: object, keys: tuple[str, ...]) -> None:
        self.source = source
        self.table = table
        if not isinstance(data, dict):
            raise self.error(f"must be a table, got {_kind(data)}")
        self.data: dict[str, Any] = data
        for key in data:
            if key not in keys:
                raise self.error(f"unknown key {key!r}{closest(key, keys)}; allowed: {', '.join(keys)}")

    def error(self, message: str, key: str | None = None) -> PackageError:
        where = f"[{self.table}]" if key is None else f"[{self.table}] key {key!r}"
        return PackageError(f"{self.source}: {where}: {message}", fix=f"edit {self.source}")

    def text(self, key: str, *, default: str | None = None) -> str | None:
        value = self.data.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.error(f"expected a string, got {_kind(value)}", key)
        return value

    def required_text(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            raise self.error("is required", key)
        return value

    def choice(self, key: str, choices: tuple[_C, ...], default: _C | None) -> _C:
        value = self.text(key, default=default)
        if value is None:
            raise self.error(f"is required; one of {', '.join(choices)}", key)
        if value not in choices:
            raise self.error(
                f"expected one of {', '.join(choices)}, got {value!r}{closest(value, choices)}", key
            )
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise self.error(f"expected true or false, got {_kind(value)}", key)
        return value


def _kind(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a float"}
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{names.get(type(value), type(value).__name__)} {value!r}"


def parse_manifest(text: str, *, source: str) -> Project:
    """Parse and check the text of a ``packfleet.toml``; ``source`` names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PackageError(f"{source}: not valid TOML: {exc}", fix=f"edit {source}") from exc
    top = _Reader(source, "top level", document, _TOP_KEYS)
    if "project" not in document:
        raise top.error("the [project] table is required")
    project = _Reader(source, "project", document["project"], _PROJECT_KEYS)
    name = project.required_text("name")
    if not _NAME.fullmatch(name):
        raise project.error(f"expected letters, digits, '_', '.' or '-', got {name!r}", "name")
    version = project.required_text("version")
    if not version.strip():
        raise project.error("must not be empty", "version")
    parameters = _parameters(source, "parameters", document.get("parameters", {}))
    packages_table = document.get("packages")
    if not isinstance(packages_table, dict) or not packages_table:
        raise top.error("at least one [packages.<name>] table is required")
    packages = {
        package_name: _package(source, package_name, body, parameters)
        for package_name, body in packages_table.items()
    }
    return Project(
        name=name,
        version=version,
        description=project.text("description", default="") or "",
        parameters=parameters,
        packages=packages,
    )


def _parameters(source: str, table: str, data: object) -> dict[str, ParameterSpec]:
    if not isinstance(data, dict):
        raise PackageError(
            f"{source}: [{table}]: must be a table of parameters, got {_kind(data)}",
            fix=f"edit {source}",
        )
    specs: dict[str, ParameterSpec] = {}
    for name, body in data.items():
        reader = _Reader(source, f"{table}.{name}", body, _PARAMETER_KEYS)
        if not _PARAMETER_NAME.fullmatch(name):
            raise reader.error("a parameter name is letters, digits and '_', not starting with a digit")
        ptype = reader.choice("type", PARAMETER_TYPES, "string")
        default = reader.data.get("default")
        if default is not None:
            try:
                default = coerce_value(ptype, default, strings=False)
            except ValueError as exc:
                raise reader.error(str(exc), "default") from None
        required = reader.flag("required") or default is None
        if reader.data.get("required") is True and default is not None:
            raise reader.error("a required parameter cannot have a default", "required")
        specs[name] = ParameterSpec(name, ptype, default, reader.flag("sensitive"), required)
    return specs


def _package(
    source: str, name: str, body: object, project_parameters: Mapping[str, ParameterSpec]
) -> PackageSpec:
    table = f"packages.{name}"
    reader = _Reader(source, table, body, _PACKAGE_KEYS)
    if not _NAME.fullmatch(name):
        raise reader.error("a package name is letters, digits, '_', '.' or '-'")
    kind = reader.choice("kind", PACKAGE_KINDS, None)
    isolation = reader.choice("isolation", ISOLATIONS, "fresh")
    maximum = reader.data.get("max_tasks_per_process")
    if maximum is not None and isolation != "pooled":
        raise reader.error("applies only to isolation = 'pooled'", "max_tasks_per_process")
    if maximum is None:
        maximum = DEFAULT_MAX_TASKS_PER_PROCESS
    if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 1:
        raise reader.error(f"expected a whole number >= 1, got {_kind(maximum)}", "max_tasks_per_process")
    parameters = _parameters(source, f"{table}.parameters", reader.data.get("parameters", {}))
    for clash in parameters.keys() & project_parameters.keys():
        raise reader.error(
            f"parameter {clash!r} is already a project parameter; packages share one namespace",
            "parameters",
        )
    entry, file, connection = reader.text("entry"), reader.text("file"), reader.text("connection")
    if kind == "python":
        for key in ("file", "connection"):
            if reader.data.get(key) is not None:
                raise reader.error("applies only to kind = 'sql'", key)
        entry = reader.required_text("entry")
        if not _ENTRY.fullmatch(entry):
            raise reader.error(f"expected 'module:function', got {entry!r}", "entry")
    else:
        if entry is not None:
            raise reader.error("applies only to kind = 'python'", "entry")
        file = reader.required_text("file")
        problem = relative_path_problem(file)
        if problem:
            raise reader.error(problem, "file")
        connection = reader.required_text("connection")
        visible = {**project_parameters, **parameters}
        spec = visible.get(connection)
        if spec is None:
            raise reader.error(
                f"names no parameter: {connection!r}{closest(connection, visible)}", "connection"
            )
        if spec.type != "string":
            raise reader.error(f"parameter {connection!r} must be of type 'string'", "connection")
    return PackageSpec(name, kind, entry, file, connection, isolation, maximum, parameters)


def relative_path_problem(path: str) -> str | None:
    """Why ``path`` is not a plain relative POSIX path inside a project, or None when it is."""
    if not path or "\\" in path or "\x00" in path:
        return f"expected a relative path with '/' separators, got {path!r}"
    pure = PurePosixPath(path)
    if pure.is_absolute() or re.match(r"[A-Za-z]:", path):
        return f"must be relative to the project folder, got {path!r}"
    if any(part in ("..", ".") for part in path.split("/")) or "" in path.split("/"):
        return f"must not contain '.', '..' or empty components, got {path!r}"
    return None


def entry_files(entry: str) -> tuple[str, str]:
    """The two files that may hold ``entry``'s module: ``a/b.py`` or ``a/b/__init__.py``."""
    module = entry.partition(":")[0].replace(".", "/")
    return f"{module}.py", f"{module}/__init__.py"


def check_no_sensitive_defaults(project: Project, *, source: str) -> None:
    """Refuse a non-empty ``default`` on a ``sensitive = true`` parameter.

    A default travels inside the archive and the catalog's manifest, where nothing seals it, so a secret
    written there would sit in plain text on every master and worker. Checked when a project is built or
    deployed, not when a worker unpacks a version that is already deployed.
    """
    tables = [("parameters", project.parameters)] + [
        (f"packages.{name}.parameters", package.parameters) for name, package in project.packages.items()
    ]
    for table, specs in tables:
        for spec in specs.values():
            if spec.sensitive and spec.default not in (None, ""):
                raise PackageError(
                    f"{source}: [{table}.{spec.name}] key 'default': a sensitive parameter cannot have a"
                    " default; it would be stored unsealed in the archive and the catalog",
                    fix=f"remove the default from {source} and pass the value when you run:"
                    f" packfleet run FOLDER/PROJECT/PACKAGE --param {spec.name}=VALUE",
                )


def check_files(project: Project, exists: Callable[[str], bool], *, source: str) -> None:
    """Check that every package's module or SQL file is present (``exists`` takes a POSIX path)."""
    for package in project.packages.values():
        if package.entry is not None:
            candidates = entry_files(package.entry)
            if not any(exists(c) for c in candidates):
                raise PackageError(
                    f"{source}: [packages.{package.name}] key 'entry': module of "
                    f"{package.entry!r} not found (looked for {' and '.join(candidates)})",
                    fix=f"add {candidates[0]} to the project or correct the entry",
                )
        if package.file is not None and not exists(package.file):
            raise PackageError(
                f"{source}: [packages.{package.name}] key 'file': {package.file!r} not found",
                fix=f"add {package.file} to the project or correct the path",
            )


def load_project(directory: Path) -> Project:
    """Read ``<directory>/packfleet.toml`` and check that the files it names exist."""
    path = directory / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PackageError(
            f"{path}: not found; a project folder holds a {MANIFEST_NAME}",
            fix=f"create {path} with a [project] table and at least one [packages.<name>] table",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PackageError(f"{path}: cannot be read: {exc}") from exc
    project = parse_manifest(text, source=str(path))
    check_files(project, lambda name: (directory / name).is_file(), source=str(path))
    return project


def coerce_value(ptype: ParameterType, value: object, *, strings: bool = True) -> ParameterValue:
    """``value`` as ``ptype``; with ``strings``, text as typed on a command line ("42", "yes")."""
    if ptype == "string":
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {_kind(value)}")
    if isinstance(value, str) and strings:
        return _from_text(ptype, value)
    if ptype == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {_kind(value)}")
    # bool is a subclass of int in Python; `true` is never a count.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected {'an integer' if ptype == 'int' else 'a number'}, got {_kind(value)}")
    if ptype == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"expected an integer, got {_kind(value)}")
            return int(value)
        return value
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _from_text(ptype: ParameterType, text: str) -> ParameterValue:
    stripped = text.strip()
    if ptype == "bool":
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
        raise ValueError(f"expected true/false (or yes/no, on/off, 1/0), got {text!r}")
    if ptype == "int":
        if re.fullmatch(r"[+-]?\d+", stripped):
            return int(stripped)
        raise ValueError(f"expected an integer, got {text!r}")
    try:
        number = float(stripped)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {text!r}")
    return number


def _package_of(project: Project, package: str) -> PackageSpec:
    spec = project.packages.get(package)
    if spec is None:
        raise PackageError(
            f"project {project.name!r} has no package {package!r}{closest(package, project.packages)}; "
            f"packages: {', '.join(sorted(project.packages))}"
        )
    return spec


def parameter_specs(project: Project, package: str) -> dict[str, ParameterSpec]:
    """Every parameter ``package`` sees: the project's, then its own."""
    return {**project.parameters, **_package_of(project, package).parameters}


def resolve_parameters(project: Project, package: str, given: Mapping[str, ParameterValue]) -> dict[str, Any]:
    """Typed values of every parameter of ``package``: ``given`` coerced, defaults filled in.

    ``resolve_parameters(p, "load", {"batch_size": "42"})`` -> ``{"target_db": "sqlite:///out.db",
    "batch_size": 42}``. Refuses unknown names (naming the closest) and lists missing required ones.
    """
    specs = parameter_specs(project, package)
    values: dict[str, Any] = {}
    for name, raw in given.items():
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            raise PackageError(
                f"package {package!r} has no parameter {name!r}{closest(name, specs)}; "
                f"its parameters: {known}"
            )
        try:
            values[name] = coerce_value(spec.type, raw)
        except ValueError as exc:
            shown = MASK if spec.sensitive else None
            detail = f"expected a value of type {spec.type}" if shown else str(exc)
            raise PackageError(f"parameter {name!r} of package {package!r}: {detail}") from None
    missing = [name for name, spec in specs.items() if name not in values and spec.required]
    if missing:
        raise PackageError(
            f"package {package!r} needs a value for required parameter(s): {', '.join(missing)}",
            fix=" ".join(f"--param {name}=<value>" for name in missing),
        )
    for name, spec in specs.items():
        values.setdefault(name, spec.default)
    return {name: values[name] for name in specs}


def mask_parameters(project: Project, package: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every sensitive parameter shown as ``********`` (for listings and logs).

    A name the manifest does not declare is masked too: nothing says it is safe to show.
    """
    specs = parameter_specs(project, package)
    return {
        name: value if name in specs and not specs[name].sensitive else MASK for name, value in values.items()
    }
