"""``packfleet settings``: read and change MasterSettings.config / WorkerSettings.config by SSIS key name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import click
from rich.console import Console
from rich.table import Table

from packfleet.cli._binding import binding_disagreement
from packfleet.cli._main import cli
from packfleet.cli._output import CliState, json_option
from packfleet.config import (
    SettingsKind,
    get_setting,
    load_manager_settings,
    load_master_settings,
    load_worker_settings,
    redact_setting,
    set_setting,
    settings_path,
    settings_to_json,
)
from packfleet.pki import CertStore

_KINDS = click.Choice(["master", "worker", "manager"], case_sensitive=False)
_READERS = {
    "master": "the master reads it at start and on reload (SIGHUP)",
    "worker": "the worker reads it at start and on reload (SIGHUP)",
    "manager": "the next manager command reads it",
}


def _shown(value: object) -> str:
    """A value as a person would type it back: strings bare, everything else (and "") as JSON."""
    if isinstance(value, str) and value:
        return value
    return json.dumps(value)


#: Keys that pin a certificate, and the store the node looks it up in.
_PIN_STORES: dict[tuple[str, str], str] = {
    ("master", "SSLCertThumbprint"): "Root",
    ("worker", "MasterHttpsCertThumbprint"): "Root",
    ("worker", "NextMasterHttpsCertThumbprint"): "Root",
    ("worker", "WorkerHttpsCertThumbprint"): "My",
    ("manager", "MasterHttpsCertThumbprint"): "Root",
    ("manager", "NextMasterHttpsCertThumbprint"): "Root",
    ("manager", "AdminCertThumbprint"): "My",
}


def _pin_not_in_store(home: Path, kind: str, key: str, value: object) -> str | None:
    """Why a thumbprint just pinned will not be found when the node starts, or None if it will."""
    store_name = _PIN_STORES.get((kind, key))
    if store_name is None or not isinstance(value, str) or not value:
        return None
    store = CertStore(home, store_name)
    if store.contains(value):
        return None
    near = store.near(value)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return (
        f"{key} {value} is not in store {store_name} of {home}{hint}. It must be there before this "
        f"node uses it: packfleet cert import FILE --store {store_name} (packfleet cert list --store "
        f"{store_name} shows what is there)"
    )


@cli.group("settings")
def settings_group() -> None:
    """Show or change a node's settings files, by SSIS key name.

    MasterSettings.config and WorkerSettings.config hold SSIS Scale Out's keys (PortNumber,
    SSLCertThumbprint, MasterHttpsCertThumbprint, LeaseInterval, ...); ManagerSettings.config holds
    how the manager CLI reaches a master. Editing them by hand works too: these commands check
    every key and value the way the services do when they start.
    """


@settings_group.command("show")
@click.argument("kind", type=_KINDS)
@json_option
@click.pass_obj
def show_settings(state: CliState, kind: str) -> None:
    """Print every key of KIND's settings file (master, worker or manager) with its value.

    Keys the file leaves out are shown with their defaults. SSIS equivalent: open
    MasterSettings.config / WorkerSettings.config in the service's folder.

    \b
    Example:
      packfleet --home /srv/w settings show worker
    """
    home = state.home()
    kind = kind.lower()
    if kind == "master":
        values = settings_to_json(load_master_settings(home))
    elif kind == "worker":
        values = settings_to_json(load_worker_settings(home))
    else:
        values = settings_to_json(load_manager_settings(home))
    # CatalogUrl's password stays in the 0600 file; neither the table nor --json repeats it.
    values = {key: redact_setting(key, value) for key, value in values.items()}
    path = settings_path(home, cast(SettingsKind, kind))

    def human(out: Console) -> None:
        table = Table(title=str(path), title_justify="left", show_edge=False)
        table.add_column("key")
        table.add_column("value", overflow="fold")
        for key, value in values.items():
            table.add_row(key, _shown(value))
        out.print(table)

    state.emit({"file": path, "kind": kind, "settings": values}, human)


@settings_group.command("set")
@click.argument("kind", type=_KINDS)
@click.argument("key")
@click.argument("value")
@json_option
@click.pass_obj
def set_settings(state: CliState, kind: str, key: str, value: str) -> None:
    """Set KEY to VALUE in KIND's settings file (master, worker or manager), checked first.

    The seed's procedures edit these files by hand: "set SSLCertThumbprint to the new certificate's
    thumbprint" (master), "set MasterHttpsCertThumbprint" and "set WorkerHttpsCertThumbprint"
    (worker). Thumbprints may be pasted with spaces, colons or in lowercase; durations are .NET
    TimeSpans (00:01:00, 7.00:00:00); start a negative value after `--`.

    \b
    Example:
      packfleet --home /srv/m settings set master SSLCertThumbprint "a9 4b 0c ..."
    """
    home = state.home()
    settings_kind = cast(SettingsKind, kind.lower())
    canonical, old = get_setting(home, settings_kind, key)
    set_setting(home, settings_kind, key, value)
    _, new = get_setting(home, settings_kind, canonical)
    old, new = redact_setting(canonical, old), redact_setting(canonical, new)
    path = settings_path(home, settings_kind)

    def human(out: Console) -> None:
        out.print(f"{path.name}: {canonical} {_shown(old)} -> {_shown(new)}")

    state.emit({"file": path, "kind": settings_kind, "key": canonical, "old": old, "new": new}, human)
    if canonical != key:
        state.note(f"{key!r} was saved as {canonical!r}, the spelling packfleet writes")
    state.note(f"{path} saved; {_READERS[settings_kind]}")
    missing = _pin_not_in_store(home, settings_kind, canonical, new)
    if missing:
        state.note(f"[yellow]warning:[/] {missing}")
    if settings_kind == "master" and canonical in ("SSLCertThumbprint", "PortNumber"):
        warning = binding_disagreement(home)
        if warning:
            state.note(warning)
