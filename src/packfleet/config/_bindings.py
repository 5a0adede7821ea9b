"""``<home>/bindings.json``: the table ``netsh http add sslcert`` keeps in HTTP.SYS, as a file.

On Windows the SSIS master does not choose its certificate: HTTP.SYS serves whatever certificate is
bound to ``ipport=0.0.0.0:8391``, and the seed's "change the master certificate" procedure edits
that binding with ``netsh http delete sslcert`` / ``add sslcert``. packfleet's master reads this
file the same way (and re-reads it, so a binding change needs no restart). Each entry is::

    {"ipport": "0.0.0.0:8391", "certhash": "A94B...", "certstorename": "Root",
     "appid": "{4dc3e181-e14b-4a21-b022-59fc669b0914}"}
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from packfleet.config._atomic import atomic_write, locked
from packfleet.config._home import BINDINGS_FILE
from packfleet.config._jsonfile import json_kind, read_json
from packfleet.errors import PkiError, SettingsError
from packfleet.thumbprint import normalize_thumbprint

_FIELDS = ("ipport", "certhash", "certstorename", "appid")
_STORES = ("My", "Root")
_IPPORT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[0-9.]+)):(?P<port>\d{1,5})", re.ASCII)


@dataclass(frozen=True)
class Binding:
    """One sslcert binding: which certificate (by thumbprint and store) answers on ``ipport``.

    ``appid`` identifies the application that owns the binding; netsh requires one and the seed
    keeps the original when it rebinds, so tools can tell packfleet's bindings apart.
    """

    ipport: str
    certhash: str
    certstorename: str
    appid: str

    @property
    def port(self) -> int:
        return int(self.ipport.rpartition(":")[2])

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def format_ipport(ip: str, port: int) -> str:
    """Join an address and a port as netsh writes them: ``0.0.0.0:8391``, ``[::]:8391``."""
    return normalize_ipport(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")


def normalize_ipport(text: str) -> str:
    """Check ``IP:port`` (IPv4, or ``[IPv6]:port``) and return it in canonical spelling."""
    expected = "IP:port like 0.0.0.0:8391 or [::]:8391"
    match = _IPPORT.fullmatch(text.strip())
    if match is None:
        raise SettingsError(f"{text!r} is not an ipport: expected {expected}")
    try:
        address = ipaddress.ip_address(match["v6"] or match["v4"])
    except ValueError:
        raise SettingsError(f"{text!r} is not an ipport: expected {expected}") from None
    if match["v6"] and address.version != 6:
        raise SettingsError(f"{text!r} is not an ipport: an IPv4 address goes without brackets")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise SettingsError(f"{text!r} is not an ipport: the port must be from 1 to 65535")
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _normalize_appid(text: str) -> str:
    # netsh prints appids as "{4dc3e181-...}"; GUIDs compare case-insensitively, so store lowercase.
    try:
        return "{" + str(uuid.UUID(text.strip())) + "}"
    except ValueError:
        raise SettingsError(
            f"{text!r} is not an appid: expected a GUID like {{4dc3e181-e14b-4a21-b022-59fc669b0914}}"
        ) from None


def _normalize_store(text: str) -> str:
    for store in _STORES:
        if store.casefold() == text.strip().casefold():
            return store
    raise SettingsError(f"{text!r} is not a certificate store name: expected My or Root")


def _normalize(binding: Binding) -> Binding:
    try:
        certhash = normalize_thumbprint(binding.certhash, what="certhash")
    except PkiError as exc:
        raise SettingsError(exc.message, fix=exc.fix) from None
    return Binding(
        ipport=normalize_ipport(binding.ipport),
        certhash=certhash,
        certstorename=_normalize_store(binding.certstorename),
        appid=_normalize_appid(binding.appid),
    )


def new_appid() -> str:
    """A fresh appid, for a binding made without one (netsh requires one; SSIS setup makes one)."""
    return "{" + str(uuid.uuid4()) + "}"


def _bindings_path(home: Path) -> Path:
    return Path(home) / BINDINGS_FILE


def _entry(path: Path, index: int, raw: object) -> Binding:
    where = f"{path}: entry {index + 1}"
    if not isinstance(raw, dict):
        raise SettingsError(f"{where} is not a JSON object", fix=f"correct or remove it in {path}")
    for name in raw:
        if name not in _FIELDS:
            close = difflib.get_close_matches(name.casefold(), _FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected {', '.join(_FIELDS)}"
            raise SettingsError(f"{where}: unknown key {name!r}{hint}", fix=f"correct it in {path}")
    missing = [name for name in _FIELDS if name not in raw]
    if missing:
        raise SettingsError(f"{where} lacks {', '.join(missing)}", fix=f"correct it in {path}")
    values = {name: raw[name] for name in _FIELDS if isinstance(raw[name], str)}
    if len(values) != len(_FIELDS):
        raise SettingsError(f"{where}: every value must be a string", fix=f"correct it in {path}")
    try:
        return _normalize(Binding(**values))
    except SettingsError as exc:
        raise SettingsError(f"{where}: {exc.message}", fix=f"correct it in {path}") from None


def load_bindings(home: Path) -> list[Binding]:
    """Every binding in ``<home>/bindings.json``; none when the file does not exist yet."""
    path = _bindings_path(home)
    raw = read_json(path, what="bindings")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SettingsError(
            f"{path}: expected a JSON array of bindings, found {json_kind(raw)}",
            fix=f"correct {path} or delete it and run `packfleet binding add`",
        )
    bindings = [_entry(path, index, item) for index, item in enumerate(raw)]
    seen: set[str] = set()
    for binding in bindings:
        if binding.ipport in seen:
            raise SettingsError(
                f"{path}: {binding.ipport} is bound twice; HTTP.SYS allows one certificate per ipport",
                fix=f"keep one entry for {binding.ipport} in {path}",
            )
        seen.add(binding.ipport)
    return bindings


def _save_bindings(home: Path, bindings: list[Binding]) -> None:
    text = json.dumps([binding.to_dict() for binding in bindings], indent=2) + "\n"
    atomic_write(_bindings_path(home), text, mode=0o600)


def get_binding(home: Path, ipport: str) -> Binding | None:
    """The binding on ``ipport`` (``netsh http show sslcert ipport=...``), or ``None``."""
    wanted = normalize_ipport(ipport)
    return next((b for b in load_bindings(home) if b.ipport == wanted), None)


def add_binding(home: Path, binding: Binding) -> Binding:
    """Bind a certificate to an ipport (``netsh http add sslcert``) and return the stored binding.

    Like netsh (error 183, "Cannot create a file when that file already exists"), an ipport that is
    already bound is refused rather than overwritten: the seed deletes the old binding first, after
    noting its appid.
    """
    wanted = _normalize(binding)
    Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)
    with locked(_bindings_path(home)):
        bindings = load_bindings(home)
        for existing in bindings:
            if existing.ipport == wanted.ipport:
                ip, _, port = existing.ipport.rpartition(":")
                raise SettingsError(
                    f"{existing.ipport} is already bound to certificate {existing.certhash} "
                    f"({existing.certstorename} store, appid {existing.appid}); delete it first",
                    fix=f"packfleet binding delete --ip {ip.strip('[]')} --port {port}",
                )
        _save_bindings(home, [*bindings, wanted])
    return wanted


def delete_binding(home: Path, ipport: str) -> Binding:
    """Remove the binding on ``ipport`` (``netsh http delete sslcert``) and return what it was."""
    wanted = normalize_ipport(ipport)
    path = _bindings_path(home)
    if not path.exists():
        raise _no_binding(path, wanted)
    with locked(path):
        bindings = load_bindings(home)
        removed = next((b for b in bindings if b.ipport == wanted), None)
        if removed is None:
            raise _no_binding(path, wanted)
        _save_bindings(home, [b for b in bindings if b is not removed])
    return removed


def _no_binding(path: Path, ipport: str) -> SettingsError:
    ip, _, port = ipport.rpartition(":")
    return SettingsError(
        f"no binding for {ipport} in {path}",
        fix=f"packfleet binding show (lists every binding); to make one: packfleet binding add "
        f"--ip {ip.strip('[]')} --port {port} --certhash THUMBPRINT --store Root",
    )
