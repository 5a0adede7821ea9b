"""A further master on the same PostgreSQL catalog: ``master export-node`` and ``master init --from-node``.

Masters that share a catalog must serve the same master certificate (workers pin one thumbprint and
list every master's URL), trust the same client certificates (the Root store decides the handshake),
agree on the settings that shape the shared rows (catalog, sweep intervals, retention, TLS floor) and
hold the same secrets files. The bundle carries exactly that, encrypted: AES-256-GCM under a key
that scrypt derives from a password, the envelope's header bound in as associated data so no field
of it can be changed unnoticed. Ports, addresses and bindings stay each master's own.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from packfleet._files import atomic_replace
from packfleet.catalog import Catalog
from packfleet.config import (
    ManagerSettings,
    MasterSettings,
    load_manager_settings,
    load_master_settings,
    mask_url_password,
    save_manager_settings,
    save_master_settings,
    set_setting,
    settings_path,
    settings_to_json,
)
from packfleet.errors import PkiError, UsageError
from packfleet.pki import (
    CertInfo,
    CertStore,
    Credential,
    export_certificate,
    load_credential_bytes,
    machine_names,
)
from packfleet.provision._master import MASTER_CER, MasterInit, _bind

log = logging.getLogger("packfleet.provision")

BUNDLE_FORMAT = "packfleet-node/1"
#: MasterSettings keys every master on one catalog must agree on; the others are each master's own.
SHARED_SETTINGS = (
    "CatalogUrl",
    "CleanupCompletedJobsIntervalInMs",
    "DealWithExpiredTasksIntervalInMs",
    "MasterHeartbeatIntervalInMs",
    "SqlConnectionTimeoutInSecs",
    "TlsMinimumVersion",
    "RetentionWindowInDays",
)
#: Secret files of the master home that every master needs, carried by name when present.
SHARED_FILES = ("secrets.key",)
#: scrypt cost: about 0.1 s and 32 MiB on one core, paid once per export or import.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_MIN_PASSWORD = 8
_SHARE_FIX = (
    "move the catalog to PostgreSQL first (packfleet settings set master CatalogUrl "
    "postgresql+psycopg://USER@HOST/DB on every master); a SQLite file cannot be shared by two masters"
)


@dataclass(frozen=True)
class NodeExport:
    """What ``master export-node`` wrote."""

    path: Path
    thumbprint: str
    settings: list[str]
    files: list[str]
    trusted: int

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "thumbprint": self.thumbprint,
            "settings": self.settings,
            "files": self.files,
            "trusted": self.trusted,
        }


def uncovered_names(info: CertInfo, names: Sequence[str]) -> list[str]:
    """The names in ``names`` that a TLS client would refuse for the certificate ``info``."""
    return [name for name in dict.fromkeys(names) if not info.matches_host(name)]


def _is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0].casefold() in ("postgresql", "postgres")


def _kdf(salt: bytes) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)


def _check_password(password: str) -> bytes:
    if len(password) < _MIN_PASSWORD:
        raise UsageError(
            f"the bundle password has {len(password)} characters; it needs at least {_MIN_PASSWORD}",
            fix="pipe a longer password: printf '%s\\n' \"$PW\" | packfleet master export-node --out F "
            "--password-stdin",
        )
    return password.encode()


def seal(payload: dict[str, Any], password: str) -> bytes:
    """Encrypt ``payload`` (JSON) into a bundle: AES-256-GCM under an scrypt key from ``password``."""
    secret = _check_password(password)
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    header = {"format": BUNDLE_FORMAT, "kdf": "scrypt", "n": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P}
    header["salt"] = base64.b64encode(salt).decode()
    header["nonce"] = base64.b64encode(nonce).decode()
    aad = json.dumps(header, sort_keys=True).encode()
    sealed = AESGCM(_kdf(salt).derive(secret)).encrypt(nonce, json.dumps(payload).encode(), aad)
    return json.dumps({**header, "ciphertext": base64.b64encode(sealed).decode()}, indent=1).encode() + b"\n"


def unseal(data: bytes, password: str, *, source: str) -> dict[str, Any]:
    """Decrypt a bundle made by :func:`seal`; a wrong password or a changed byte is one clear error."""
    try:
        envelope = json.loads(data)
        header = {key: envelope[key] for key in ("format", "kdf", "n", "r", "p", "salt", "nonce")}
        sealed = base64.b64decode(envelope["ciphertext"], validate=True)
        salt = base64.b64decode(header["salt"], validate=True)
        nonce = base64.b64decode(header["nonce"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise UsageError(
            f"{source} is not a node bundle of packfleet",
            fix="packfleet master export-node --out FILE (on the first master)",
        ) from None
    if header["format"] != BUNDLE_FORMAT or header["kdf"] != "scrypt":
        raise UsageError(
            f"{source} is a {header['format']!r} bundle; this packfleet reads {BUNDLE_FORMAT!r}",
            fix="export it again with this packfleet version: packfleet master export-node --out FILE",
        )
    if (header["n"], header["r"], header["p"]) != (_SCRYPT_N, _SCRYPT_R, _SCRYPT_P):
        raise UsageError(f"{source} asks for scrypt parameters this packfleet does not use")
    aad = json.dumps(header, sort_keys=True).encode()
    key = _kdf(salt).derive(password.encode())
    try:
        plain = AESGCM(key).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise UsageError(
            f"cannot open {source}: the password is wrong, or the file was changed after export",
            fix="give the password used with packfleet master export-node (or export the bundle again)",
        ) from None
    payload: dict[str, Any] = json.loads(plain)
    return payload


def export_node(home: Path, out: Path, password: str) -> NodeExport:
    """Write the bundle another master needs to ``out`` (mode 0600)."""
    _check_password(password)
    settings = load_master_settings(home)
    root = CertStore(home, "Root")
    master = root.get(settings.ssl_cert_thumbprint)
    if master.private_key is None:
        raise PkiError(
            f"the master certificate {master.thumbprint} is in the Root store without its key",
            fix="packfleet cert import master.pfx --password P --store Root",
        )
    trusted = [
        root.get(thumbprint).cert_pem().decode()
        for thumbprint in root.thumbprints()
        if thumbprint != master.thumbprint
    ]
    shared = {key: value for key, value in settings_to_json(settings).items() if key in SHARED_SETTINGS}
    files = {
        name: base64.b64encode((home / name).read_bytes()).decode()
        for name in SHARED_FILES
        if (home / name).is_file()
    }
    payload: dict[str, Any] = {
        "master": {"cert": master.cert_pem().decode(), "key": master.key_pem().decode()},
        "trusted": trusted,
        "settings": shared,
        "files": files,
    }
    admin = _admin_of(home)
    if admin is not None:
        payload["admin"] = {"cert": admin.cert_pem().decode(), "key": admin.key_pem().decode()}
    out = Path(out)
    atomic_replace(out, seal(payload, password), mode=0o600)
    log.info("node bundle for master %s written to %s", master.thumbprint, out)
    return NodeExport(out, master.thumbprint, sorted(shared), sorted(files), len(trusted))


def _admin_of(home: Path) -> Credential | None:
    """The manager's admin identity of this master home, with its key, if it has one."""
    if not settings_path(home, "manager").exists():
        return None
    thumbprint = load_manager_settings(home).admin_cert_thumbprint
    my = CertStore(home, "My")
    if not thumbprint or not my.contains(thumbprint):
        return None
    cred = my.get(thumbprint)
    return cred if cred.private_key is not None else None


def _database(url: str) -> str | None:
    try:
        return make_url(url).database
    except ArgumentError:
        return None


def init_master_from_node(
    home: Path,
    bundle: Path,
    password: str,
    *,
    catalog_url: str,
    port: int = 8391,
    cns: Sequence[str] = (),
    address: str | None = None,
) -> MasterInit:
    """Set up a further master in ``home`` from a bundle: same certificate, trust and shared settings."""
    if not _is_postgres(catalog_url):
        raise UsageError(
            f"--catalog {mask_url_password(catalog_url)!r} is not PostgreSQL: only a PostgreSQL catalog "
            "can be shared by several masters",
            fix=_SHARE_FIX,
        )
    try:
        data = Path(bundle).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {bundle}: {exc.strerror or exc}") from None
    payload = unseal(data, password, source=str(bundle))
    shared: dict[str, Any] = payload["settings"]
    exported_url = str(shared.get("CatalogUrl", ""))
    if not _is_postgres(exported_url):
        raise UsageError(
            f"{bundle} comes from a master whose catalog is "
            f"{'SQLite in its home' if not exported_url else mask_url_password(exported_url)}: "
            "a SQLite catalog cannot be shared by several masters",
            fix=_SHARE_FIX + ", then export the bundle again",
        )
    if _database(exported_url) != _database(catalog_url):
        raise UsageError(
            f"--catalog names database {_database(catalog_url)!r}, the exported master uses "
            f"{_database(exported_url)!r}: masters on different databases do not share work",
            fix=f"--catalog with the same database as the first master ({mask_url_password(exported_url)})",
        )

    home.mkdir(parents=True, exist_ok=True)
    master = load_credential_bytes(
        (payload["master"]["cert"] + payload["master"]["key"]).encode(), source=f"{bundle} (master)"
    )
    root = CertStore(home, "Root")
    root.add(master)  # with its key, as master init keeps it
    for pem in payload.get("trusted", []):
        root.add(Credential(load_credential_bytes(pem.encode(), source=f"{bundle} (trusted)").certificate))
    admin: Credential | None = None
    if "admin" in payload:
        admin = load_credential_bytes(
            (payload["admin"]["cert"] + payload["admin"]["key"]).encode(), source=f"{bundle} (admin)"
        )
        CertStore(home, "My").add(admin)
        root.add(Credential(admin.certificate))
    for name, encoded in payload.get("files", {}).items():
        if name not in SHARED_FILES:
            raise UsageError(f"{bundle} carries an unexpected file {name!r}; refusing to write it")
        atomic_replace(home / name, base64.b64decode(encoded), mode=0o600)

    info = master.info("Root")
    names = list(cns) or machine_names()
    first = next((name for name in names if info.matches_host(name)), names[0])
    host = f"[{first}]" if ":" in first else first
    address = address or f"https://{host}:{port}"
    binding = _bind(home, port, master.thumbprint)
    save_master_settings(
        home,
        MasterSettings(
            port_number=port,
            ssl_cert_thumbprint=master.thumbprint,
            catalog_url=catalog_url,
            master_address=address,
        ),
    )
    # The shared keys go through `settings set`'s own checks: a bundle cannot write what loading refuses.
    for key, value in shared.items():
        if key in SHARED_SETTINGS and key != "CatalogUrl":
            set_setting(home, "master", key, str(value))
    settings = load_master_settings(home)
    master_cer = export_certificate(master, home / MASTER_CER)

    catalog = Catalog.open(catalog_url, connect_timeout=settings.sql_connection_timeout_secs, upgrade=True)
    try:
        if admin is not None:
            catalog.ensure_principal("admin", "admin", thumbprint=admin.thumbprint, actor="master init")
        catalog.audit("master init --from-node", "master.init", master.thumbprint, {"address": address})
    finally:
        catalog.close()
    if admin is not None:
        save_manager_settings(
            home,
            ManagerSettings(
                master_endpoint=address,
                master_https_cert_thumbprint=master.thumbprint,
                admin_cert_thumbprint=admin.thumbprint,
            ),
        )
    log.info("further master initialised in %s from %s: certificate %s", home, bundle, master.thumbprint)
    return MasterInit(
        home=home,
        thumbprint=master.thumbprint,
        admin_thumbprint=admin.thumbprint if admin is not None else "",
        address=address,
        port=port,
        master_cer=master_cer,
        catalog_url=catalog_url,
        binding=binding,
        uncovered=tuple(uncovered_names(info, names)),
    )
