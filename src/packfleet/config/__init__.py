"""Node configuration: the home, SSIS's settings files, the sslcert bindings table, atomic writes.

A leaf layer (standard library, :mod:`packfleet.errors` and :mod:`packfleet.thumbprint` only). Every
file it reads is checked strictly and every file it writes is replaced atomically::

    home = resolve_home("/srv/m")
    master = load_master_settings(home)       # MasterSettings(port_number=8391, ...)
    set_setting(home, "worker", "LeaseInternval", "00:02:00")
    # -> ('LeaseInterval', timedelta(seconds=120)); SSIS's old spelling is accepted and corrected
"""

from packfleet.config._atomic import atomic_write
from packfleet.config._bindings import (
    Binding,
    add_binding,
    delete_binding,
    format_ipport,
    get_binding,
    load_bindings,
    new_appid,
    normalize_ipport,
)
from packfleet.config._home import (
    BINDINGS_FILE,
    HOME_ENV,
    MANAGER_SETTINGS_FILE,
    MASTER_SETTINGS_FILE,
    WORKER_SETTINGS_FILE,
    StoreLocation,
    default_location,
    resolve_home,
)
from packfleet.config._redact import mask_url_password, redact_setting
from packfleet.config._settings import (
    ManagerSettings,
    MasterSettings,
    SettingsKind,
    WorkerSettings,
    get_setting,
    load_manager_settings,
    load_master_settings,
    load_worker_settings,
    save_manager_settings,
    save_master_settings,
    save_worker_settings,
    set_setting,
    settings_path,
    settings_to_json,
)
from packfleet.config._timespan import format_timespan, parse_timespan
from packfleet.config._values import split_endpoints

__all__ = [
    "BINDINGS_FILE",
    "HOME_ENV",
    "MANAGER_SETTINGS_FILE",
    "MASTER_SETTINGS_FILE",
    "WORKER_SETTINGS_FILE",
    "Binding",
    "ManagerSettings",
    "MasterSettings",
    "SettingsKind",
    "StoreLocation",
    "WorkerSettings",
    "add_binding",
    "atomic_write",
    "default_location",
    "delete_binding",
    "format_ipport",
    "format_timespan",
    "get_binding",
    "get_setting",
    "load_bindings",
    "load_manager_settings",
    "load_master_settings",
    "load_worker_settings",
    "mask_url_password",
    "new_appid",
    "normalize_ipport",
    "parse_timespan",
    "redact_setting",
    "resolve_home",
    "save_manager_settings",
    "save_master_settings",
    "save_worker_settings",
    "set_setting",
    "settings_path",
    "settings_to_json",
    "split_endpoints",
]
