"""MasterSettings.config, WorkerSettings.config and ManagerSettings.config, read and written for real."""

from __future__ import annotations

import dataclasses
import json
import socket
import stat
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from packfleet.config import (
    MANAGER_SETTINGS_FILE,
    MASTER_SETTINGS_FILE,
    WORKER_SETTINGS_FILE,
    ManagerSettings,
    MasterSettings,
    StoreLocation,
    WorkerSettings,
    get_setting,
    load_manager_settings,
    load_master_settings,
    load_worker_settings,
    save_manager_settings,
    save_master_settings,
    save_worker_settings,
    set_setting,
    settings_to_json,
)
from packfleet.errors import SettingsError

THUMB = "A94B0C12EF" + "00" * 15
AGENT = "6f1c2a9e-8d1b-4c3e-9a57-0d2f4b6e8a10"


def write(home: Path, name: str, content: Any) -> Path:
    path = home / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def on_disk(home: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / name).read_text(encoding="utf-8"))
    return data


# --- missing files and defaults ------------------------------------------------------------------


def test_missing_master_file_says_to_init(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist") as caught:
        load_master_settings(tmp_path)
    assert caught.value.fix == "packfleet master init"
    assert str(tmp_path / MASTER_SETTINGS_FILE) in caught.value.message


def test_missing_worker_file_says_to_init(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_worker_settings(tmp_path)
    assert caught.value.fix == "packfleet worker init --master URL"
    assert not (tmp_path / WORKER_SETTINGS_FILE).exists()


def test_missing_manager_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_manager_settings(tmp_path)


def test_empty_objects_give_ssis_defaults(tmp_path: Path) -> None:
    for name in (MASTER_SETTINGS_FILE, WORKER_SETTINGS_FILE, MANAGER_SETTINGS_FILE):
        write(tmp_path, name, {})
    assert load_master_settings(tmp_path) == MasterSettings()
    assert load_manager_settings(tmp_path) == ManagerSettings()
    worker = load_worker_settings(tmp_path)
    assert dataclasses.replace(worker, agent_id="") == WorkerSettings()
    assert worker.display_name == socket.gethostname()


def test_master_defaults_match_the_ssis_table() -> None:
    assert settings_to_json(MasterSettings()) == {
        "PortNumber": 8391,
        "SSLCertThumbprint": "",
        "CatalogUrl": "",
        "CleanupCompletedJobsIntervalInMs": 43200000,
        "DealWithExpiredTasksIntervalInMs": 300000,
        "MasterHeartbeatIntervalInMs": 30000,
        "SqlConnectionTimeoutInSecs": 15,
        "MasterAddress": "",
        "TlsMinimumVersion": "1.3",
        "RetentionWindowInDays": 7,
        "RequestHeaderTimeoutInSecs": 10,
        "IdleConnectionTimeoutInSecs": 30,
        "MaxConnectionsPerAddress": 128,
        "MaxConnections": 4096,
        "ConsoleEnabled": True,
        "ConsoleAddress": "127.0.0.1",
        "ConsolePort": 8392,
        "ConsoleCertThumbprint": "",
    }


def test_worker_defaults_match_the_ssis_table() -> None:
    values = settings_to_json(WorkerSettings(display_name="w1"))
    assert list(values) == [
        "DisplayName",
        "Description",
        "MasterEndpoint",
        "MasterHttpsCertThumbprint",
        "WorkerHttpsCertThumbprint",
        "StoreLocation",
        "StoreName",
        "AgentHeartbeatInterval",
        "TaskHeartbeatInterval",
        "HeartbeatErrorTolerance",
        "TaskRequestMaxCPU",
        "TaskRequestMinMemory",
        "MaxTaskCount",
        "LeaseInterval",
        "TasksRootFolder",
        "TaskLogLevel",
        "TaskLogEnabled",
        "TaskFolderKeepCount",
        "ExecutionLogCacheFolder",
        "ExecutionLogRetryCount",
        "ExecutionLogRetryTimeout",
        "ExecutionLogMaxBufferLogCount",
        "AgentId",
        "NextMasterHttpsCertThumbprint",
    ]
    assert values["StoreLocation"] == "LocalMachine"
    assert values["StoreName"] == "My"
    assert values["AgentHeartbeatInterval"] == "00:01:00"
    assert values["TaskHeartbeatInterval"] == "00:00:10"
    assert values["HeartbeatErrorTolerance"] == "00:10:00"
    assert values["LeaseInterval"] == "00:01:00"
    assert values["ExecutionLogRetryTimeout"] == "7.00:00:00"
    assert (values["TaskRequestMaxCPU"], values["TaskRequestMinMemory"]) == (70.0, 100.0)
    assert (values["MaxTaskCount"], values["TaskLogLevel"], values["TaskLogEnabled"]) == (10, 126, True)
    assert values["TaskFolderKeepCount"] == 1000
    assert (values["ExecutionLogRetryCount"], values["ExecutionLogMaxBufferLogCount"]) == (3, 10000)


# --- round trips and the file on disk --------------------------------------------------------------


def test_master_round_trip(tmp_path: Path) -> None:
    settings = MasterSettings(
        port_number=9443,
        ssl_cert_thumbprint=THUMB,
        catalog_url="postgresql+psycopg://packfleet@127.0.0.1/catalog",
        master_heartbeat_interval_ms=5000,
        master_address="https://master.example.com:9443",
        tls_minimum_version="1.2",
        retention_window_days=30,
    )
    path = save_master_settings(tmp_path, settings)
    assert path == tmp_path / MASTER_SETTINGS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # CatalogUrl may carry a password
    assert load_master_settings(tmp_path) == settings
    assert on_disk(tmp_path, MASTER_SETTINGS_FILE)["PortNumber"] == 9443


def test_worker_round_trip_writes_timespans_as_text(tmp_path: Path) -> None:
    settings = WorkerSettings(
        display_name="etl-01",
        description="nightly loads",
        master_endpoint="https://[::1]:8391",
        master_https_cert_thumbprint=THUMB,
        worker_https_cert_thumbprint="B" * 40,
        store_location=StoreLocation.CURRENT_USER,
        store_name="Root",
        agent_heartbeat_interval=timedelta(seconds=30),
        lease_interval=timedelta(minutes=5),
        execution_log_retry_timeout=timedelta(days=1, hours=12),
        task_request_max_cpu=55.5,
        max_task_count=2,
        task_log_enabled=False,
        tasks_root_folder="work",
        agent_id=AGENT,
        next_master_https_cert_thumbprint="C" * 40,
    )
    save_worker_settings(tmp_path, settings)
    assert load_worker_settings(tmp_path) == settings
    raw = on_disk(tmp_path, WORKER_SETTINGS_FILE)
    assert raw["LeaseInterval"] == "00:05:00"
    assert raw["ExecutionLogRetryTimeout"] == "1.12:00:00"
    assert raw["StoreLocation"] == "CurrentUser"
    assert raw["TaskLogEnabled"] is False


def test_manager_round_trip(tmp_path: Path) -> None:
    settings = ManagerSettings("https://127.0.0.1:8391", THUMB, "D" * 40)
    save_manager_settings(tmp_path, settings)
    assert load_manager_settings(tmp_path) == settings
    assert list(on_disk(tmp_path, MANAGER_SETTINGS_FILE)) == [
        "MasterEndpoint",
        "MasterHttpsCertThumbprint",
        "AdminCertThumbprint",
        "NextMasterHttpsCertThumbprint",
        "MasterCertFile",
        "AdminCertFile",
        "AdminKeyFile",
    ]


def test_save_creates_the_home(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    save_master_settings(home, MasterSettings())
    assert (home / MASTER_SETTINGS_FILE).is_file()


def test_save_normalises_what_people_typed(tmp_path: Path) -> None:
    typed = "\u200ea9 4b:0c 12 ef" + " 00" * 15
    save_master_settings(tmp_path, MasterSettings(ssl_cert_thumbprint=typed))
    assert on_disk(tmp_path, MASTER_SETTINGS_FILE)["SSLCertThumbprint"] == THUMB


def test_save_refuses_a_value_loading_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="PortNumber = 0 is not valid") as caught:
        save_master_settings(tmp_path, MasterSettings(port_number=0))
    assert "not saved" in caught.value.message
    assert not (tmp_path / MASTER_SETTINGS_FILE).exists()


def test_catalog_url_defaults_to_sqlite_in_the_home(tmp_path: Path) -> None:
    assert MasterSettings().resolved_catalog_url(tmp_path) == f"sqlite:///{tmp_path}/catalog.db"
    url = "postgresql+psycopg://u@127.0.0.1/c"
    assert MasterSettings(catalog_url=url).resolved_catalog_url(tmp_path) == url


def test_worker_folders(tmp_path: Path) -> None:
    assert WorkerSettings().tasks_root(tmp_path) == tmp_path / "tasks"
    assert WorkerSettings().log_cache(tmp_path) == tmp_path / "logcache"
    relative = WorkerSettings(tasks_root_folder="work/tasks", execution_log_cache_folder="cache")
    assert relative.tasks_root(tmp_path) == tmp_path / "work" / "tasks"
    assert relative.log_cache(tmp_path) == tmp_path / "cache"
    absolute = WorkerSettings(tasks_root_folder=str(tmp_path / "elsewhere"))
    assert absolute.tasks_root(tmp_path / "home") == tmp_path / "elsewhere"


# --- what SSIS files contain: strings for numbers, .NET booleans, pasted thumbprints ---------------


def test_numbers_and_booleans_as_strings(tmp_path: Path) -> None:
    write(
        tmp_path,
        WORKER_SETTINGS_FILE,
        {
            "MaxTaskCount": "4",
            "TaskRequestMaxCPU": "55.5",
            "TaskRequestMinMemory": 0,
            "TaskLogEnabled": "False",
            "TaskLogLevel": " 0 ",
            "ExecutionLogRetryCount": 5.0,
            "AgentId": AGENT,
        },
    )
    worker = load_worker_settings(tmp_path)
    assert worker.max_task_count == 4
    assert worker.task_request_max_cpu == 55.5
    assert worker.task_request_min_memory == 0.0
    assert worker.task_log_enabled is False
    assert worker.task_log_level == 0
    assert worker.execution_log_retry_count == 5


@pytest.mark.parametrize(
    ("text", "expected"), [(True, True), ("true", True), ("TRUE", True), ("false", False)]
)
def test_booleans(tmp_path: Path, text: object, expected: bool) -> None:
    write(tmp_path, WORKER_SETTINGS_FILE, {"TaskLogEnabled": text, "AgentId": AGENT})
    assert load_worker_settings(tmp_path).task_log_enabled is expected


def test_thumbprints_are_normalised_on_load(tmp_path: Path) -> None:
    write(
        tmp_path,
        WORKER_SETTINGS_FILE,
        {
            "MasterHttpsCertThumbprint": "\u200ea94b0c12ef" + "00" * 15,
            "WorkerHttpsCertThumbprint": ":".join(["bb"] * 20),
            "AgentId": "{" + AGENT.upper() + "}",
        },
    )
    worker = load_worker_settings(tmp_path)
    assert worker.master_https_cert_thumbprint == THUMB
    assert worker.worker_https_cert_thumbprint == "B" * 40
    assert worker.agent_id == AGENT


def test_endpoint_is_kept_without_trailing_slash(tmp_path: Path) -> None:
    write(tmp_path, MANAGER_SETTINGS_FILE, {"MasterEndpoint": "HTTPS://master.example.com:8391/"})
    assert load_manager_settings(tmp_path).master_endpoint == "https://master.example.com:8391"


def test_store_name_and_location_take_any_case(tmp_path: Path) -> None:
    write(
        tmp_path,
        WORKER_SETTINGS_FILE,
        {"StoreName": "root", "StoreLocation": "currentuser", "AgentId": AGENT},
    )
    worker = load_worker_settings(tmp_path)
    assert (worker.store_name, worker.store_location) == ("Root", StoreLocation.CURRENT_USER)


def test_utf8_bom_from_notepad_is_accepted(tmp_path: Path) -> None:
    (tmp_path / MASTER_SETTINGS_FILE).write_bytes(b"\xef\xbb\xbf" + b'{"PortNumber": 8392}')
    assert load_master_settings(tmp_path).port_number == 8392


# --- SSIS's historic misspellings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "canonical", "attr"),
    [
        ("HeartbeatErrorTollerance", "HeartbeatErrorTolerance", "heartbeat_error_tolerance"),
        ("LeaseInternval", "LeaseInterval", "lease_interval"),
    ],
)
def test_worker_aliases_load_and_are_saved_back_correctly(
    tmp_path: Path, alias: str, canonical: str, attr: str
) -> None:
    write(tmp_path, WORKER_SETTINGS_FILE, {alias: "00:03:00"})  # no AgentId: loading rewrites the file
    assert getattr(load_worker_settings(tmp_path), attr) == timedelta(minutes=3)
    raw = on_disk(tmp_path, WORKER_SETTINGS_FILE)
    assert alias not in raw
    assert raw[canonical] == "00:03:00"


def test_sql_server_name_is_an_alias_of_catalog_url(tmp_path: Path) -> None:
    url = "postgresql+psycopg://u@127.0.0.1/c"
    write(tmp_path, MASTER_SETTINGS_FILE, {"SqlServerName": url})
    settings = load_master_settings(tmp_path)
    assert settings.catalog_url == url
    save_master_settings(tmp_path, settings)
    assert on_disk(tmp_path, MASTER_SETTINGS_FILE)["CatalogUrl"] == url
    assert "SqlServerName" not in on_disk(tmp_path, MASTER_SETTINGS_FILE)


def test_alias_and_right_spelling_together_are_refused(tmp_path: Path) -> None:
    write(tmp_path, WORKER_SETTINGS_FILE, {"LeaseInterval": "00:01:00", "LeaseInternval": "00:02:00"})
    with pytest.raises(SettingsError, match="'LeaseInterval' and 'LeaseInternval' both set LeaseInterval"):
        load_worker_settings(tmp_path)


# --- unknown keys ---------------------------------------------------------------------------------


def test_unknown_key_names_the_file_and_the_closest_key(tmp_path: Path) -> None:
    write(tmp_path, WORKER_SETTINGS_FILE, {"LeaseIntervall": "00:01:00"})
    with pytest.raises(SettingsError) as caught:
        load_worker_settings(tmp_path)
    assert caught.value.message.endswith(
        "WorkerSettings.config: unknown key 'LeaseIntervall'; did you mean 'LeaseInterval'?"
    )
    assert caught.value.message.startswith(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("portnumber", "PortNumber"),
        ("SSLCERTTHUMBPRINT", "SSLCertThumbprint"),
        ("SqlServername", "CatalogUrl"),
    ],
)
def test_wrong_case_is_refused_with_the_right_spelling(tmp_path: Path, name: str, suggestion: str) -> None:
    write(tmp_path, MASTER_SETTINGS_FILE, {name: "x"})
    with pytest.raises(SettingsError, match=f"unknown key '{name}'; did you mean '{suggestion}'"):
        load_master_settings(tmp_path)


def test_unknown_key_with_no_close_match_lists_the_valid_keys(tmp_path: Path) -> None:
    write(tmp_path, MANAGER_SETTINGS_FILE, {"Colour": "blue"})
    with pytest.raises(SettingsError, match="valid keys are MasterEndpoint, MasterHttpsCertThumbprint"):
        load_manager_settings(tmp_path)


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    write(tmp_path, MASTER_SETTINGS_FILE, '{"PortNumber": 1, "PortNumber": 2}')
    with pytest.raises(SettingsError, match="key 'PortNumber' appears twice"):
        load_master_settings(tmp_path)


# --- bad values and bad files ---------------------------------------------------------------------

BAD_VALUES = [
    ("worker", "LeaseInterval", "1 minute", "a .NET TimeSpan like 00:01:00 or 7.00:00:00"),
    ("worker", "AgentHeartbeatInterval", "00:00:00", "greater than zero"),
    ("worker", "HeartbeatErrorTolerance", 600, "a .NET TimeSpan"),
    ("worker", "MaxTaskCount", 0, "a whole number >= 1"),
    ("worker", "MaxTaskCount", 2.5, "a whole number >= 1"),
    ("worker", "MaxTaskCount", True, "a whole number >= 1"),
    ("worker", "TaskRequestMaxCPU", 101, "a number from 0 to 100"),
    ("worker", "TaskRequestMaxCPU", "NaN", "a number from 0 to 100"),
    ("worker", "TaskRequestMaxCPU", "seventy", "a number from 0 to 100"),
    ("worker", "TaskRequestMaxCPU", [70], "a number from 0 to 100"),
    ("worker", "TaskRequestMinMemory", -1, "a number >= 0"),
    ("worker", "TaskLogEnabled", "yes", "true or false"),
    ("worker", "MasterEndpoint", "http://master:8391", "an https URL with host and port"),
    ("worker", "MasterEndpoint", "https://master", "an https URL with host and port"),
    ("worker", "MasterEndpoint", "https://master:8391/api", "an https URL with host and port"),
    ("worker", "MasterEndpoint", "https://master:99999", "an https URL with host and port"),
    ("worker", "MasterHttpsCertThumbprint", "A94B", "40 hex digits"),
    ("worker", "WorkerHttpsCertThumbprint", "Z" * 40, "40 hex digits"),
    ("worker", "StoreName", "CA", "My or Root"),
    ("worker", "StoreLocation", "Machine", "LocalMachine or CurrentUser"),
    ("worker", "AgentId", "worker-1", "a GUID"),
    ("worker", "Description", 5, "a string"),
    ("master", "PortNumber", 70000, "a whole number from 1 to 65535"),
    ("master", "PortNumber", "eighty", "a whole number from 1 to 65535"),
    ("master", "TlsMinimumVersion", "1.1", "1.3 or 1.2"),
    ("master", "CatalogUrl", "localhost\\SQLEXPRESS", "a SQLAlchemy URL"),
    ("master", "SqlServerName", "localhost\\SQLEXPRESS", "a SQLAlchemy URL"),
    ("master", "MasterAddress", "master:8391", "an https URL"),
    ("master", "RetentionWindowInDays", 0, "a whole number >= 1"),
    ("master", "RequestHeaderTimeoutInSecs", 0, "a whole number from 1 to 3600"),
    ("master", "IdleConnectionTimeoutInSecs", "30s", "a whole number from 1 to 86400"),
    ("master", "MaxConnectionsPerAddress", 0, "a whole number from 1 to 1000000"),
    ("master", "MaxConnections", -1, "a whole number from 1 to 1000000"),
]


@pytest.mark.parametrize(("kind", "key", "value", "expected"), BAD_VALUES)
def test_bad_value_names_file_key_value_and_form(
    tmp_path: Path, kind: str, key: str, value: object, expected: str
) -> None:
    name = MASTER_SETTINGS_FILE if kind == "master" else WORKER_SETTINGS_FILE
    path = write(tmp_path, name, {key: value})
    with pytest.raises(SettingsError) as caught:
        (load_master_settings if kind == "master" else load_worker_settings)(tmp_path)
    message = caught.value.message
    assert message.startswith(f"{path}: ")
    assert f" = {json.dumps(value)} is not valid; expected " in message
    assert expected in message
    assert caught.value.fix is not None and caught.value.fix.startswith(f"packfleet settings set {kind} ")


def test_bad_timespan_message_in_full(tmp_path: Path) -> None:
    path = write(tmp_path, WORKER_SETTINGS_FILE, {"LeaseInterval": "1 minute"})
    with pytest.raises(SettingsError) as caught:
        load_worker_settings(tmp_path)
    assert caught.value.message == (
        f'{path}: LeaseInterval = "1 minute" is not valid; '
        "expected a .NET TimeSpan like 00:01:00 or 7.00:00:00, greater than zero"
    )
    assert caught.value.fix == 'packfleet settings set worker LeaseInterval VALUE (default: "00:01:00")'


def test_malformed_json_points_at_line_and_column(tmp_path: Path) -> None:
    write(tmp_path, MASTER_SETTINGS_FILE, '{\n  "PortNumber": 8391,\n}\n')
    with pytest.raises(SettingsError, match=r"not valid JSON at line 3, column 1") as caught:
        load_master_settings(tmp_path)
    assert caught.value.fix is not None and "line 3" in caught.value.fix


def test_json_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    write(tmp_path, MASTER_SETTINGS_FILE, "[8391]")
    with pytest.raises(SettingsError, match="expected a JSON object .* found an array"):
        load_master_settings(tmp_path)


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / MASTER_SETTINGS_FILE).write_bytes('{"SSLCertThumbprint": "é"}'.encode("latin-1"))
    with pytest.raises(SettingsError, match="not UTF-8 text"):
        load_master_settings(tmp_path)


def test_unreadable_file_is_a_settings_error(tmp_path: Path) -> None:
    (tmp_path / MASTER_SETTINGS_FILE).mkdir()  # reading a directory fails the same way for root
    with pytest.raises(SettingsError, match="cannot read"):
        load_master_settings(tmp_path)


# --- AgentId ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [{}, {"AgentId": ""}, {"AgentId": "  "}])
def test_agent_id_is_generated_once_and_persisted(tmp_path: Path, content: dict[str, str]) -> None:
    write(tmp_path, WORKER_SETTINGS_FILE, {"DisplayName": "w1", **content})
    first = load_worker_settings(tmp_path)
    assert uuid.UUID(first.agent_id).version == 4
    assert on_disk(tmp_path, WORKER_SETTINGS_FILE)["AgentId"] == first.agent_id
    assert on_disk(tmp_path, WORKER_SETTINGS_FILE)["DisplayName"] == "w1"
    assert load_worker_settings(tmp_path).agent_id == first.agent_id


def test_existing_agent_id_is_not_rewritten(tmp_path: Path) -> None:
    path = write(tmp_path, WORKER_SETTINGS_FILE, {"AgentId": AGENT.upper()})
    before = path.stat().st_mtime_ns, path.read_text()
    assert load_worker_settings(tmp_path).agent_id == AGENT
    assert (path.stat().st_mtime_ns, path.read_text()) == before


def test_saving_without_agent_id_generates_one(tmp_path: Path) -> None:
    save_worker_settings(tmp_path, WorkerSettings())
    generated = on_disk(tmp_path, WORKER_SETTINGS_FILE)["AgentId"]
    assert uuid.UUID(generated).version == 4
    save_worker_settings(tmp_path, WorkerSettings(agent_id=AGENT))
    assert on_disk(tmp_path, WORKER_SETTINGS_FILE)["AgentId"] == AGENT


# --- set_setting / get_setting ----------------------------------------------------------------------


def test_set_returns_canonical_key_and_typed_value(tmp_path: Path) -> None:
    save_worker_settings(tmp_path, WorkerSettings(agent_id=AGENT))
    assert set_setting(tmp_path, "worker", "LeaseInternval", "00:02:00") == (
        "LeaseInterval",
        timedelta(minutes=2),
    )
    assert set_setting(tmp_path, "worker", "MaxTaskCount", "3") == ("MaxTaskCount", 3)
    assert set_setting(tmp_path, "worker", "TaskLogEnabled", "FALSE") == ("TaskLogEnabled", False)
    worker = load_worker_settings(tmp_path)
    assert (worker.lease_interval, worker.max_task_count, worker.task_log_enabled) == (
        timedelta(minutes=2),
        3,
        False,
    )
    assert on_disk(tmp_path, WORKER_SETTINGS_FILE)["MaxTaskCount"] == 3


def test_set_normalises_a_pasted_thumbprint(tmp_path: Path) -> None:
    save_master_settings(tmp_path, MasterSettings())
    key, value = set_setting(tmp_path, "master", "SSLCertThumbprint", "a9 4b 0c 12 ef" + " 00" * 15)
    assert (key, value) == ("SSLCertThumbprint", THUMB)
    assert load_master_settings(tmp_path).ssl_cert_thumbprint == THUMB


def test_set_replaces_an_alias_in_place_and_keeps_the_rest_as_written(tmp_path: Path) -> None:
    write(
        tmp_path,
        WORKER_SETTINGS_FILE,
        {"DisplayName": "w1", "LeaseInternval": "00:01:00", "MaxTaskCount": "4"},
    )
    set_setting(tmp_path, "worker", "LeaseInterval", "00:04:00")
    assert list(on_disk(tmp_path, WORKER_SETTINGS_FILE).items()) == [
        ("DisplayName", "w1"),
        ("LeaseInterval", "00:04:00"),
        ("MaxTaskCount", "4"),
    ]


def test_set_repairs_one_bad_value_in_a_file_that_does_not_load(tmp_path: Path) -> None:
    write(tmp_path, MASTER_SETTINGS_FILE, {"PortNumber": "eighty", "RetentionWindowInDays": 3})
    with pytest.raises(SettingsError):
        load_master_settings(tmp_path)
    set_setting(tmp_path, "master", "PortNumber", "8080")
    settings = load_master_settings(tmp_path)
    assert (settings.port_number, settings.retention_window_days) == (8080, 3)


def test_set_refuses_a_bad_value_and_leaves_the_file(tmp_path: Path) -> None:
    path = save_master_settings(tmp_path, MasterSettings())
    before = path.read_bytes()
    with pytest.raises(SettingsError, match='PortNumber = "0" is not valid; expected a whole number'):
        set_setting(tmp_path, "master", "PortNumber", "0")
    assert path.read_bytes() == before


def test_set_refuses_an_unknown_key_with_a_suggestion(tmp_path: Path) -> None:
    save_worker_settings(tmp_path, WorkerSettings())
    with pytest.raises(
        SettingsError, match="unknown key 'LeaseIntervall'; did you mean 'LeaseInterval'"
    ) as caught:
        set_setting(tmp_path, "worker", "LeaseIntervall", "00:01:00")
    assert caught.value.fix == "packfleet settings show worker"


def test_set_on_a_missing_master_file_says_to_init(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        set_setting(tmp_path, "master", "PortNumber", "8391")
    assert caught.value.fix == "packfleet master init"
    assert not (tmp_path / MASTER_SETTINGS_FILE).exists()


def test_set_creates_the_manager_file(tmp_path: Path) -> None:
    home = tmp_path / "admin"
    set_setting(home, "manager", "MasterEndpoint", "https://127.0.0.1:8391")
    assert load_manager_settings(home) == ManagerSettings(master_endpoint="https://127.0.0.1:8391")


def test_set_on_malformed_json_does_not_overwrite_it(tmp_path: Path) -> None:
    path = write(tmp_path, MANAGER_SETTINGS_FILE, "{oops")
    with pytest.raises(SettingsError, match="not valid JSON"):
        set_setting(tmp_path, "manager", "MasterEndpoint", "https://127.0.0.1:8391")
    assert path.read_text() == "{oops"


def test_set_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="expected master, worker or manager"):
        set_setting(tmp_path, "catalog", "PortNumber", "1")  # type: ignore[arg-type]


def test_get_setting_reads_the_file_or_the_default(tmp_path: Path) -> None:
    write(tmp_path, WORKER_SETTINGS_FILE, {"HeartbeatErrorTollerance": "00:20:00", "MaxTaskCount": "x"})
    assert get_setting(tmp_path, "worker", "HeartbeatErrorTolerance") == (
        "HeartbeatErrorTolerance",
        "00:20:00",
    )
    assert get_setting(tmp_path, "worker", "MaxTaskCount") == ("MaxTaskCount", "x")  # not validated
    assert get_setting(tmp_path, "worker", "LeaseInterval") == ("LeaseInterval", "00:01:00")
    assert get_setting(tmp_path, "worker", "DisplayName") == ("DisplayName", socket.gethostname())


def test_get_setting_without_a_file_gives_the_default(tmp_path: Path) -> None:
    assert get_setting(tmp_path, "master", "SqlServerName") == ("CatalogUrl", "")
    assert not (tmp_path / MASTER_SETTINGS_FILE).exists()


def test_concurrent_first_loads_agree_on_one_agent_id(tmp_path: Path) -> None:
    write(tmp_path, WORKER_SETTINGS_FILE, {"DisplayName": "w1"})
    barrier = threading.Barrier(8)

    def first_start(_: int) -> str:
        barrier.wait(timeout=10)
        return load_worker_settings(tmp_path).agent_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(first_start, range(8)))
    assert ids == {on_disk(tmp_path, WORKER_SETTINGS_FILE)["AgentId"]}
