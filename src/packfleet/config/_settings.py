"""MasterSettings.config, WorkerSettings.config and ManagerSettings.config: typed, strict, atomic.

The files are JSON objects keyed by SSIS's setting names, so an administrator who knows SSIS Scale
Out finds ``PortNumber`` and ``MasterHttpsCertThumbprint`` where they expect them. Loading is strict
(uvicorn's ``Config.load`` and arq's ``RedisSettings`` are the model): an unknown key is an error
that names the closest valid key, and a bad value is an error that names the form it should have,
because a silently ignored typo in a heartbeat interval shows up weeks later as a "dead" worker.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from packfleet.config import _values as v
from packfleet.config._atomic import atomic_write, locked
from packfleet.config._home import (
    MANAGER_SETTINGS_FILE,
    MASTER_SETTINGS_FILE,
    WORKER_SETTINGS_FILE,
    StoreLocation,
)
from packfleet.config._jsonfile import json_kind, read_json
from packfleet.config._redact import redact_setting
from packfleet.errors import SettingsError

SettingsKind = Literal["master", "worker", "manager"]


@dataclass(frozen=True)
class MasterSettings:
    """MasterSettings.config: what the master serves on and where its catalog lives.

    ``catalog_url`` replaces SSIS's ``SqlServerName`` (a SQL Server instance) with a SQLAlchemy URL;
    the old key is read as an alias. ``master_address`` is the URL workers are told to use, SSIS
    setup's ``MASTER_ADDRESS``.
    """

    port_number: int = 8391
    ssl_cert_thumbprint: str = ""
    catalog_url: str = ""
    cleanup_completed_jobs_interval_ms: int = 43_200_000
    deal_with_expired_tasks_interval_ms: int = 300_000
    master_heartbeat_interval_ms: int = 30_000
    sql_connection_timeout_secs: int = 15
    master_address: str = ""
    tls_minimum_version: str = "1.3"
    retention_window_days: int = 7
    #: Seconds a new connection has for its TLS handshake and its first request's headers.
    request_header_timeout_secs: int = 10
    #: Seconds a keep-alive connection that has carried no request with a client certificate may idle.
    idle_connection_timeout_secs: int = 30
    #: Open connections (handshaking or established) from one peer address.
    max_connections_per_address: int = 128
    #: Open connections in total; the master raises its open-file limit to fit them when it may.
    max_connections: int = 4096
    #: The web console: its own listener with server-only TLS, since browsers hold no client certificate.
    console_enabled: bool = True
    console_address: str = "127.0.0.1"
    console_port: int = 8392
    #: Empty: the console serves the master certificate (the one SSLCertThumbprint names).
    console_cert_thumbprint: str = ""

    def resolved_catalog_url(self, home: Path) -> str:
        """The catalog URL to connect to: ``CatalogUrl``, or SQLite in the home when it is empty."""
        return self.catalog_url or f"sqlite:///{home}/catalog.db"


@dataclass(frozen=True)
class WorkerSettings:
    """WorkerSettings.config, key for key and default for default as SSIS's worker has it."""

    display_name: str = field(default_factory=socket.gethostname)
    description: str = ""
    #: One master URL, or several comma-separated when masters share a PostgreSQL catalog.
    master_endpoint: str = ""
    master_https_cert_thumbprint: str = ""
    worker_https_cert_thumbprint: str = ""
    store_location: StoreLocation = StoreLocation.LOCAL_MACHINE
    store_name: str = "My"
    agent_heartbeat_interval: timedelta = timedelta(minutes=1)
    task_heartbeat_interval: timedelta = timedelta(seconds=10)
    heartbeat_error_tolerance: timedelta = timedelta(minutes=10)
    task_request_max_cpu: float = 70.0
    task_request_min_memory: float = 100.0
    max_task_count: int = 10
    lease_interval: timedelta = timedelta(minutes=1)
    tasks_root_folder: str = ""
    task_log_level: int = 126
    task_log_enabled: bool = True
    task_folder_keep_count: int = 1000
    execution_log_cache_folder: str = ""
    execution_log_retry_count: int = 3
    execution_log_retry_timeout: timedelta = timedelta(days=7)
    execution_log_max_buffer_log_count: int = 10_000
    agent_id: str = ""
    next_master_https_cert_thumbprint: str = ""

    def tasks_root(self, home: Path) -> Path:
        """Where task folders go: ``TasksRootFolder``, ``<home>/tasks`` when empty.

        A relative folder is taken relative to the home, not to whatever directory the service
        happened to start in.
        """
        return _folder(home, self.tasks_root_folder, "tasks")

    def log_cache(self, home: Path) -> Path:
        """Where unacknowledged event messages wait: ``ExecutionLogCacheFolder`` or ``<home>/logcache``."""
        return _folder(home, self.execution_log_cache_folder, "logcache")


@dataclass(frozen=True)
class ManagerSettings:
    """ManagerSettings.config (packfleet's own): how the manager CLI reaches and proves itself to a master."""

    #: One master URL, or several comma-separated when masters share a PostgreSQL catalog.
    master_endpoint: str = ""
    master_https_cert_thumbprint: str = ""
    admin_cert_thumbprint: str = ""
    #: During a master certificate rotation, the certificate the master will serve next: the manager
    #: accepts it beside the pinned one, as a worker does, so no command fails at the switch.
    next_master_https_cert_thumbprint: str = ""
    #: A manager away from the master's home: the master's certificate file (the ``master.cer``
    #: workers get) to pin instead of a Root-store thumbprint, relative to the home or absolute.
    master_cert_file: str = ""
    #: ...and its identity as PEM files (``manager identity create`` writes them), instead of a
    #: My-store thumbprint.
    admin_cert_file: str = ""
    admin_key_file: str = ""


AnySettings = MasterSettings | WorkerSettings | ManagerSettings
S = TypeVar("S", MasterSettings, WorkerSettings, ManagerSettings)


def _folder(home: Path, configured: str, default: str) -> Path:
    if not configured:
        return home / default
    return home / Path(configured).expanduser()  # `/` keeps an absolute right-hand side as is


@dataclass(frozen=True)
class _Key:
    name: str
    attr: str
    read: v.Reader
    write: v.Writer = v.identity
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Schema(Generic[S]):
    kind: SettingsKind
    file_name: str
    cls: type[S]
    keys: tuple[_Key, ...]
    missing_fix: str
    # Every file in a node's home is private to its service account (the worker and manager files
    # hold no secret, but name the pinned certificates and endpoints: nobody else needs them).
    file_mode: int = 0o600

    def by_name(self) -> dict[str, _Key]:
        table = {key.name: key for key in self.keys}
        table.update({alias: key for key in self.keys for alias in key.aliases})
        return table


_MASTER: _Schema[MasterSettings] = _Schema(
    kind="master",
    file_name=MASTER_SETTINGS_FILE,
    cls=MasterSettings,
    missing_fix="packfleet master init",
    # CatalogUrl may hold the PostgreSQL password (postgresql+psycopg://user:password@host/db), so the
    # file is readable by its owner only, like a private key: the account the master runs as must own
    # it (chown), and a rewrite keeps that owner. The worker and manager files hold no secret.
    file_mode=0o600,
    keys=(
        _Key("PortNumber", "port_number", v.integer(1, 65535)),
        _Key("SSLCertThumbprint", "ssl_cert_thumbprint", v.read_thumbprint),
        _Key("CatalogUrl", "catalog_url", v.read_catalog_url, aliases=("SqlServerName",)),
        _Key("CleanupCompletedJobsIntervalInMs", "cleanup_completed_jobs_interval_ms", v.integer(1)),
        _Key("DealWithExpiredTasksIntervalInMs", "deal_with_expired_tasks_interval_ms", v.integer(1)),
        _Key("MasterHeartbeatIntervalInMs", "master_heartbeat_interval_ms", v.integer(1)),
        _Key("SqlConnectionTimeoutInSecs", "sql_connection_timeout_secs", v.integer(1)),
        _Key("MasterAddress", "master_address", v.read_https_endpoint),
        _Key("TlsMinimumVersion", "tls_minimum_version", v.choice(("1.3", "1.2"))),
        _Key("RetentionWindowInDays", "retention_window_days", v.integer(1)),
        _Key("RequestHeaderTimeoutInSecs", "request_header_timeout_secs", v.integer(1, 3600)),
        _Key("IdleConnectionTimeoutInSecs", "idle_connection_timeout_secs", v.integer(1, 86400)),
        _Key("MaxConnectionsPerAddress", "max_connections_per_address", v.integer(1, 1_000_000)),
        _Key("MaxConnections", "max_connections", v.integer(1, 1_000_000)),
        _Key("ConsoleEnabled", "console_enabled", v.read_bool),
        _Key("ConsoleAddress", "console_address", v.read_ip_address),
        _Key("ConsolePort", "console_port", v.integer(1, 65535)),
        _Key("ConsoleCertThumbprint", "console_cert_thumbprint", v.read_thumbprint),
    ),
)

_WORKER: _Schema[WorkerSettings] = _Schema(
    kind="worker",
    file_name=WORKER_SETTINGS_FILE,
    cls=WorkerSettings,
    missing_fix="packfleet worker init --master URL",
    keys=(
        _Key("DisplayName", "display_name", v.read_text),
        _Key("Description", "description", v.read_text),
        _Key("MasterEndpoint", "master_endpoint", v.read_https_endpoints),
        _Key("MasterHttpsCertThumbprint", "master_https_cert_thumbprint", v.read_thumbprint),
        _Key("WorkerHttpsCertThumbprint", "worker_https_cert_thumbprint", v.read_thumbprint),
        _Key("StoreLocation", "store_location", v.read_store_location, v.write_enum),
        _Key("StoreName", "store_name", v.choice(("My", "Root"))),
        _Key("AgentHeartbeatInterval", "agent_heartbeat_interval", v.read_duration, v.write_duration),
        _Key("TaskHeartbeatInterval", "task_heartbeat_interval", v.read_duration, v.write_duration),
        _Key(
            "HeartbeatErrorTolerance",
            "heartbeat_error_tolerance",
            v.read_duration,
            v.write_duration,
            aliases=("HeartbeatErrorTollerance",),  # the spelling SSIS 2017 shipped with
        ),
        _Key("TaskRequestMaxCPU", "task_request_max_cpu", v.decimal(0.0, 100.0)),
        _Key("TaskRequestMinMemory", "task_request_min_memory", v.decimal(0.0)),
        _Key("MaxTaskCount", "max_task_count", v.integer(1)),
        _Key(
            "LeaseInterval",
            "lease_interval",
            v.read_duration,
            v.write_duration,
            aliases=("LeaseInternval",),  # the spelling SSIS 2017 shipped with
        ),
        _Key("TasksRootFolder", "tasks_root_folder", v.read_text),
        _Key("TaskLogLevel", "task_log_level", v.integer(0)),
        _Key("TaskLogEnabled", "task_log_enabled", v.read_bool),
        _Key("TaskFolderKeepCount", "task_folder_keep_count", v.integer(0)),
        _Key("ExecutionLogCacheFolder", "execution_log_cache_folder", v.read_text),
        _Key("ExecutionLogRetryCount", "execution_log_retry_count", v.integer(0)),
        _Key("ExecutionLogRetryTimeout", "execution_log_retry_timeout", v.read_duration, v.write_duration),
        _Key("ExecutionLogMaxBufferLogCount", "execution_log_max_buffer_log_count", v.integer(1)),
        _Key("AgentId", "agent_id", v.read_agent_id),
        _Key("NextMasterHttpsCertThumbprint", "next_master_https_cert_thumbprint", v.read_thumbprint),
    ),
)

_MANAGER: _Schema[ManagerSettings] = _Schema(
    kind="manager",
    file_name=MANAGER_SETTINGS_FILE,
    cls=ManagerSettings,
    missing_fix="packfleet settings set manager MasterEndpoint https://HOST:8391",
    keys=(
        _Key("MasterEndpoint", "master_endpoint", v.read_https_endpoints),
        _Key("MasterHttpsCertThumbprint", "master_https_cert_thumbprint", v.read_thumbprint),
        _Key("AdminCertThumbprint", "admin_cert_thumbprint", v.read_thumbprint),
        _Key("NextMasterHttpsCertThumbprint", "next_master_https_cert_thumbprint", v.read_thumbprint),
        _Key("MasterCertFile", "master_cert_file", v.read_text),
        _Key("AdminCertFile", "admin_cert_file", v.read_text),
        _Key("AdminKeyFile", "admin_key_file", v.read_text),
    ),
)

_SCHEMAS: dict[str, _Schema[Any]] = {schema.kind: schema for schema in (_MASTER, _WORKER, _MANAGER)}
_BY_CLASS: dict[type, _Schema[Any]] = {schema.cls: schema for schema in _SCHEMAS.values()}


def _schema(kind: str) -> _Schema[Any]:
    try:
        return _SCHEMAS[kind]
    except KeyError:
        raise SettingsError(f"{kind!r} is not a settings file: expected master, worker or manager") from None


def _resolve_key(schema: _Schema[Any], name: str, source: str, *, fix: str | None = None) -> _Key:
    """Find the key called ``name`` (or an old alias of it), else fail naming the closest key.

    Valid keys match exactly, as SSIS's loader does; a key that differs only in case is still an
    error, but the suggestion makes the fix obvious.
    """
    table = schema.by_name()
    if name in table:
        return table[name]
    canonical = [key.name for key in schema.keys]
    folded = {candidate.casefold(): table[candidate].name for candidate in table}
    suggestion = folded.get(name.casefold())
    if suggestion is None:
        close = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
        suggestion = folded[close[0]] if close else None
    if suggestion is not None:
        message = f"{source}: unknown key {name!r}; did you mean {suggestion!r}?"
    else:
        message = f"{source}: unknown key {name!r}; valid keys are {', '.join(canonical)}"
    raise SettingsError(message, fix=fix or f"rename or remove {name!r} in {source}")


def _read_value(schema: _Schema[Any], key: _Key, value: object, source: str) -> Any:
    try:
        return key.read(value)
    except v.Invalid as exc:
        example = json.dumps(_default_json(schema, key))
        shown = json.dumps(redact_setting(key.name, value), ensure_ascii=False, default=repr)
        raise SettingsError(
            f"{source}: {key.name} = {shown} is not valid; expected {exc.expected}",
            fix=f"packfleet settings set {schema.kind} {key.name} VALUE (default: {example})",
        ) from None


def _default_json(schema: _Schema[Any], key: _Key) -> object:
    for f in dataclasses.fields(schema.cls):
        if f.name == key.attr:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            return key.write(default)
    raise AssertionError(f"{key.attr} is not a field of {schema.cls.__name__}")  # pragma: no cover


def _parse(schema: _Schema[Any], raw: Mapping[str, object], source: str) -> dict[str, Any]:
    """Turn a file's JSON object into constructor arguments; absent keys keep their defaults."""
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for name, value in raw.items():
        key = _resolve_key(schema, name, source)
        if key.attr in spelled:
            raise SettingsError(
                f"{source}: {spelled[key.attr]!r} and {name!r} both set {key.name}; keep one",
                fix=f"remove {name!r} from {source}",
            )
        spelled[key.attr] = name
        values[key.attr] = _read_value(schema, key, value, source)
    return values


def _to_json(schema: _Schema[Any], settings: AnySettings) -> dict[str, Any]:
    return {key.name: key.write(getattr(settings, key.attr)) for key in schema.keys}


def _path(schema: _Schema[Any], home: Path) -> Path:
    return Path(home) / schema.file_name


def _read_raw(schema: _Schema[Any], path: Path) -> dict[str, object]:
    raw = read_json(path, missing_fix=schema.missing_fix, what=f"{schema.kind} settings")
    if not isinstance(raw, dict):
        raise SettingsError(
            f'{path}: expected a JSON object like {{"{schema.keys[0].name}": ...}}, found {json_kind(raw)}',
            fix=f"packfleet settings show {schema.kind} lists every key and its default",
        )
    return raw


def _load(schema: _Schema[S], home: Path) -> S:
    path = _path(schema, home)
    return schema.cls(**_parse(schema, _read_raw(schema, path), str(path)))


def _save(schema: _Schema[S], home: Path, settings: S) -> Path:
    path = _path(schema, home)
    # Re-reading what we are about to write normalises thumbprints and endpoints and refuses a value
    # the loader would refuse, so no save can produce a file that the next start cannot read.
    encoded = _to_json(schema, settings)
    checked = schema.cls(**_parse(schema, encoded, f"{path} (not saved)"))
    Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)
    text = json.dumps(_to_json(schema, checked), indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, text, mode=schema.file_mode)
    return path


def load_master_settings(home: Path) -> MasterSettings:
    """Read ``<home>/MasterSettings.config``; a missing file says to run ``packfleet master init``."""
    return _load(_MASTER, home)


def save_master_settings(home: Path, settings: MasterSettings) -> Path:
    """Write ``<home>/MasterSettings.config`` atomically (mode 0600) and return its path."""
    return _save(_MASTER, home, settings)


def load_worker_settings(home: Path) -> WorkerSettings:
    """Read ``<home>/WorkerSettings.config``, giving the worker a stable AgentId on first load.

    SSIS identifies a worker by its WorkerAgentId GUID. A file written by hand (or by SSIS without
    one) gets a fresh UUID4 that is written back at once, so the next start reports the same id and
    the master does not see a new, disabled worker after every restart.
    """
    settings = _load(_WORKER, home)
    if settings.agent_id:
        return settings
    with locked(_path(_WORKER, home)):
        settings = _load(_WORKER, home)  # another process may have written one meanwhile
        if not settings.agent_id:
            settings = dataclasses.replace(settings, agent_id=str(uuid.uuid4()))
            save_worker_settings(home, settings)
    return settings


def save_worker_settings(home: Path, settings: WorkerSettings) -> Path:
    """Write ``<home>/WorkerSettings.config`` atomically; an empty AgentId gets a new UUID4."""
    if not settings.agent_id:
        settings = dataclasses.replace(settings, agent_id=str(uuid.uuid4()))
    return _save(_WORKER, home, settings)


def load_manager_settings(home: Path) -> ManagerSettings:
    """Read ``<home>/ManagerSettings.config``: the master endpoint, its pin and the admin certificate."""
    return _load(_MANAGER, home)


def save_manager_settings(home: Path, settings: ManagerSettings) -> Path:
    """Write ``<home>/ManagerSettings.config`` atomically (mode 0644) and return its path."""
    return _save(_MANAGER, home, settings)


def settings_to_json(settings: AnySettings) -> dict[str, Any]:
    """The settings as their file holds them: SSIS key names, file order, TimeSpans as text."""
    return _to_json(_BY_CLASS[type(settings)], settings)


def settings_path(home: Path, kind: SettingsKind) -> Path:
    """The file that holds ``kind``'s settings in ``home``."""
    return _path(_schema(kind), home)


def get_setting(home: Path, kind: SettingsKind, key: str) -> tuple[str, object]:
    """Return the canonical key and the value the file holds for it, in its JSON form.

    A key absent from the file, or a file that does not exist yet, gives the default. The value is
    not validated, so this works on a file that :func:`set_setting` is about to repair.
    """
    schema = _schema(kind)
    path = _path(schema, home)
    found = _resolve_key(schema, key, str(path), fix=f"packfleet settings show {kind}")
    raw = _read_raw(schema, path) if path.exists() else {}
    for name in (found.name, *found.aliases):
        if name in raw:
            return found.name, raw[name]
    return found.name, _default_json(schema, found)


def set_setting(home: Path, kind: SettingsKind, key: str, value: str) -> tuple[str, Any]:
    """Set one key in ``kind``'s settings file and return ``(canonical key, typed value)``.

    The key and value are checked exactly as loading checks them. Only that key changes: the rest
    of the file is kept as written, so ``settings set`` can repair one bad value at a time in a file
    that does not load. An old spelling (``LeaseInternval``) is replaced by the right one in place.

    >>> set_setting(home, "worker", "LeaseInternval", "00:02:00")  # doctest: +SKIP
    ('LeaseInterval', datetime.timedelta(seconds=120))
    """
    schema = _schema(kind)
    path = _path(schema, home)
    found = _resolve_key(schema, key, str(path), fix=f"packfleet settings show {kind}")
    typed = _read_value(schema, found, value, str(path))
    if kind == "manager":
        # The manager's file has no init command: the first `settings set` creates it.
        Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)
    elif not path.exists():
        _read_raw(schema, path)  # raises "does not exist" with the init command
    with locked(path):
        raw = _read_raw(schema, path) if path.exists() else {}
        updated: dict[str, object] = {}
        for name, old in raw.items():
            if name == found.name or name in found.aliases:
                updated.setdefault(found.name, found.write(typed))
            else:
                updated[name] = old
        updated.setdefault(found.name, found.write(typed))
        atomic_write(path, json.dumps(updated, indent=2, ensure_ascii=False) + "\n", mode=schema.file_mode)
    return found.name, typed
