"""``master init``: what SSIS setup's "Scale Out Configuration - Master Node" page does.

It creates (or adopts) the master certificate, binds it to the master port, writes
MasterSettings.config, exports the public certificate for workers (the seed's
``SSISScaleOutMaster.cer``) and creates the admin identity the manager uses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from packfleet.catalog import Catalog
from packfleet.config import (
    Binding,
    ManagerSettings,
    MasterSettings,
    add_binding,
    delete_binding,
    format_ipport,
    get_binding,
    load_master_settings,
    new_appid,
    save_manager_settings,
    save_master_settings,
    settings_path,
)
from packfleet.errors import PkiError
from packfleet.pki import (
    CertStore,
    Credential,
    check_usable,
    create_self_signed,
    export_certificate,
    machine_names,
)
from packfleet.secretbox import secrets_key_path
from packfleet.thumbprint import normalize_thumbprint

log = logging.getLogger("packfleet.provision")

MASTER_CER = "master.cer"
ADMIN_CN = "packfleet-admin"
#: The ip part of the master's binding, as the seed's ``netsh http ... ipport=0.0.0.0:8391``.
BIND_IP = "0.0.0.0"  # noqa: S104 - the binding names every interface, as HTTP.SYS's does


@dataclass(frozen=True)
class MasterInit:
    """What ``master init`` made, for the CLI to print and for tests to check."""

    home: Path
    thumbprint: str
    admin_thumbprint: str
    address: str
    port: int
    master_cer: Path
    catalog_url: str
    binding: Binding
    #: This host's names (or the --cn names) that the master certificate does not cover: a worker
    #: reaching this master by one of them fails the TLS host check.
    uncovered: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "uncovered_names": list(self.uncovered),
            "home": str(self.home),
            "thumbprint": self.thumbprint,
            "admin_thumbprint": self.admin_thumbprint,
            "address": self.address,
            "port": self.port,
            "master_cer": str(self.master_cer),
            "catalog_url": self.catalog_url,
            "binding": self.binding.to_dict(),
        }


def _existing_settings(home: Path) -> MasterSettings:
    return load_master_settings(home) if settings_path(home, "master").exists() else MasterSettings()


def _master_credential(
    home: Path, names: Sequence[str], existing: str | None, key_type: str, days: int
) -> Credential:
    root = CertStore(home, "Root")
    if existing:
        # SSIS setup: "use an existing SSL certificate", browsed from the local machine's Root store.
        cred = root.get(normalize_thumbprint(existing, what="--existing-cert"))
        if cred.private_key is None:
            raise PkiError(
                f"certificate {cred.thumbprint} is in the Root store without its private key, so the "
                "master cannot serve it",
                fix="packfleet cert import master.pfx --password P --store Root",
            )
        check_usable(cred)
        return cred
    cred = create_self_signed(names, key_type=key_type, days=days)
    root.add(
        cred
    )  # MakeCert ... -ss Root -sr LocalMachine: the master certificate lives in Root with its key
    return cred


def _bind(home: Path, port: int, thumbprint: str) -> Binding:
    ipport = format_ipport(BIND_IP, port)
    old = get_binding(home, ipport)
    if old is not None:
        # netsh http delete sslcert, then add with the original appid, as the seed's step 2 says.
        delete_binding(home, ipport)
    appid = old.appid if old is not None else new_appid()
    return add_binding(home, Binding(ipport=ipport, certhash=thumbprint, certstorename="Root", appid=appid))


def _admin_identity(home: Path, key_type: str, days: int) -> Credential:
    """The manager's client certificate: key in My, certificate in the master's Root (handshake trust)."""
    my = CertStore(home, "My")
    for info in my.find_by_cn(ADMIN_CN):
        if info.has_private_key and info.days_left() > 1:
            return my.get(info.thumbprint)
    admin = create_self_signed([ADMIN_CN], key_type=key_type, days=days)
    my.add(admin)
    CertStore(home, "Root").add(Credential(admin.certificate, None))
    return admin


def init_master(
    home: Path,
    *,
    cns: Sequence[str] = (),
    port: int = 8391,
    catalog_url: str | None = None,
    address: str | None = None,
    existing_cert: str | None = None,
    key_type: str = "ecdsa-p256",
    days: int = 365,
) -> MasterInit:
    """Set up a master node in ``home``; safe to run again (it replaces the certificate and binding).

    >>> init_master(Path("/srv/m"), cns=["127.0.0.1"], port=8391)  # doctest: +SKIP
    MasterInit(thumbprint='9F0A...', address='https://127.0.0.1:8391', ...)
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = list(cns) or machine_names()
    cred = _master_credential(home, names, existing_cert, key_type, days)
    info = cred.info("Root")
    binding = _bind(home, port, cred.thumbprint)
    first_name = (info.subject_cns or info.san_dns or info.san_ip or names)[0]
    host = f"[{first_name}]" if ":" in first_name else first_name
    address = address or f"https://{host}:{port}"

    settings = replace(
        _existing_settings(home),
        port_number=port,
        ssl_cert_thumbprint=cred.thumbprint,
        master_address=address,
        catalog_url=catalog_url if catalog_url is not None else _existing_settings(home).catalog_url,
    )
    save_master_settings(home, settings)
    master_cer = export_certificate(cred, home / MASTER_CER, mode=0o600)

    admin = _admin_identity(home, key_type, days)
    url = settings.resolved_catalog_url(home)
    # Also creates the secrets key file (0600) that seals sensitive parameter values in the catalog.
    catalog, _secrets = Catalog.open_sealed(
        url, secrets_key_path(home), connect_timeout=settings.sql_connection_timeout_secs, upgrade=True
    )
    try:
        catalog.ensure_principal("admin", "admin", thumbprint=admin.thumbprint, actor="master init")
        catalog.audit(
            "master init",
            "master.init",
            cred.thumbprint,
            {"address": address, "port": port, "binding": binding.to_dict()},
        )
    finally:
        catalog.close()
    save_manager_settings(
        home,
        ManagerSettings(
            master_endpoint=address,
            master_https_cert_thumbprint=cred.thumbprint,
            admin_cert_thumbprint=admin.thumbprint,
        ),
    )
    covered = info.matches_host
    log.info("master initialised in %s: certificate %s bound to %s", home, cred.thumbprint, binding.ipport)
    return MasterInit(
        home=home,
        thumbprint=cred.thumbprint,
        admin_thumbprint=admin.thumbprint,
        address=address,
        port=port,
        master_cer=master_cer,
        catalog_url=catalog.url,
        binding=binding,
        uncovered=tuple(name for name in dict.fromkeys([*names, *machine_names()]) if not covered(name)),
    )
