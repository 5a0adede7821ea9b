"""Where a node keeps its files: the home, chosen by ``--home``, ``PACKFLEET_HOME`` or store location.

Windows keeps certificates per *store location* (``MakeCert -sr LocalMachine`` or ``-sr CurrentUser``);
packfleet maps each location to a home directory, so a root service and a user's experiments never
share a store by accident.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path

from packfleet.errors import SettingsError

MASTER_SETTINGS_FILE = "MasterSettings.config"
WORKER_SETTINGS_FILE = "WorkerSettings.config"
MANAGER_SETTINGS_FILE = "ManagerSettings.config"
BINDINGS_FILE = "bindings.json"

HOME_ENV = "PACKFLEET_HOME"
_LOCAL_MACHINE_HOME = Path("/var/lib/packfleet")
_CURRENT_USER_HOME = Path(".local", "share", "packfleet")


class StoreLocation(enum.StrEnum):
    """A certificate store location, spelled as Windows and ``MakeCert -sr`` spell it."""

    LOCAL_MACHINE = "LocalMachine"
    CURRENT_USER = "CurrentUser"

    @classmethod
    def parse(cls, text: str) -> StoreLocation:
        """Read a store location case-insensitively, as ``MakeCert -sr localmachine`` does.

        >>> StoreLocation.parse("localmachine")
        <StoreLocation.LOCAL_MACHINE: 'LocalMachine'>
        """
        wanted = text.strip().casefold()
        for member in cls:
            if member.value.casefold() == wanted:
                return member
        raise SettingsError(
            f"{text!r} is not a store location: expected LocalMachine or CurrentUser",
            fix="pass --location LocalMachine or --location CurrentUser",
        )


def default_location() -> StoreLocation:
    """``LocalMachine`` for root (the service account's view), ``CurrentUser`` for anyone else."""
    return StoreLocation.LOCAL_MACHINE if os.geteuid() == 0 else StoreLocation.CURRENT_USER


def resolve_home(
    home: str | os.PathLike[str] | None = None,
    location: StoreLocation | str | None = None,
) -> Path:
    """Return the absolute home directory of this node, without creating it.

    ``home`` (the ``--home`` option) wins, then ``$PACKFLEET_HOME``, then the store location's
    default: ``/var/lib/packfleet`` for ``LocalMachine``, ``~/.local/share/packfleet`` for
    ``CurrentUser``. Symlinks are kept as given: an administrator who links the home elsewhere
    sees that path in every message.
    """
    chosen: str | os.PathLike[str] | None = home
    if chosen is None or os.fspath(chosen) == "":
        chosen = os.environ.get(HOME_ENV) or None
    if chosen is not None:
        return Path(os.path.abspath(os.path.expanduser(os.fspath(chosen))))
    if location is None:
        where = default_location()
    elif isinstance(location, StoreLocation):
        where = location
    else:
        where = StoreLocation.parse(location)
    if where is StoreLocation.LOCAL_MACHINE:
        return _LOCAL_MACHINE_HOME
    try:
        user_home = Path.home()
    except RuntimeError as exc:  # no $HOME and no passwd entry, e.g. a bare container user
        raise SettingsError(
            "cannot find the CurrentUser home: $HOME is not set and the user has no passwd entry",
            fix=f"pass --home DIR or set {HOME_ENV}",
        ) from exc
    return user_home / _CURRENT_USER_HOME
