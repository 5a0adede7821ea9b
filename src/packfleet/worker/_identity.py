"""Who this worker is and which master it trusts, read from its home and checked before any connection.

SSIS's worker reads ``WorkerHttpsCertThumbprint`` from its store and trusts the master by
``MasterHttpsCertThumbprint``. packfleet reads the same keys and checks, before the first handshake,
what a handshake would otherwise report obscurely: the worker certificate and its key are in the
store, every pinned master certificate is in the Root store, and the endpoint's host is one of the
master certificate's names (OpenSSL's host check, ``X509_V_ERR_HOSTNAME_MISMATCH``, would name
neither the host nor the certificate).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from packfleet.config import WorkerSettings, load_worker_settings, split_endpoints
from packfleet.errors import CertificateNotFound, PkiError, SettingsError
from packfleet.pki import CertInfo, CertStore, check_usable
from packfleet.transport import MasterClient, client_context, connect_master, parse_endpoint

log = logging.getLogger("packfleet.worker")

_IMPORT_MASTER = "packfleet cert import master.cer --store Root"


@dataclass(frozen=True)
class WorkerIdentity:
    """A worker's settings and the certificate material they name, checked and ready for TLS."""

    home: Path
    settings: WorkerSettings
    cert_file: Path
    key_file: Path
    certificate: CertInfo
    #: Thumbprints of the master certificates this worker accepts, the current pin first.
    pins: list[str]
    #: Those certificates as concatenated PEM: the only trust anchors of the client context.
    master_pem: str

    def ssl_context(self) -> ssl.SSLContext:
        return client_context(self.cert_file, self.key_file, self.master_pem)

    def connect(self) -> MasterClient:
        """A client for ``MasterEndpoint`` with this identity: one keep-alive pool per master, and
        fail-over between them when MasterEndpoint lists several."""
        return connect_master(
            self.settings.master_endpoint,
            self.ssl_context(),
            role="worker",
            pins=list(self.pins),
            own_thumbprint=self.certificate.thumbprint,
        )


def load_identity(home: Path) -> WorkerIdentity:
    """Read WorkerSettings.config and the stores of ``home``; raise a packfleet error naming the fix."""
    settings = load_worker_settings(home)
    if not settings.master_endpoint:
        raise SettingsError(
            f"{home}/WorkerSettings.config has no MasterEndpoint",
            fix="packfleet settings set worker MasterEndpoint https://MASTER:8391",
        )
    if not settings.worker_https_cert_thumbprint:
        raise SettingsError(
            f"{home}/WorkerSettings.config has no WorkerHttpsCertThumbprint",
            fix="packfleet worker init --master URL (creates the worker certificate and sets it)",
        )
    if not settings.master_https_cert_thumbprint:
        raise SettingsError(
            f"{home}/WorkerSettings.config has no MasterHttpsCertThumbprint: this worker trusts no master",
            fix=f"{_IMPORT_MASTER} && packfleet settings set worker MasterHttpsCertThumbprint THUMBPRINT",
        )

    store = CertStore(home, settings.store_name)
    own = store.get(settings.worker_https_cert_thumbprint)
    if own.private_key is None:
        raise PkiError(
            f"the worker certificate {own.thumbprint} (WorkerHttpsCertThumbprint) in store "
            f"{store.name} has no private key, so it cannot prove this worker's identity",
            fix=f"import it with its key: packfleet cert import worker.pfx --password P --store {store.name}",
        )
    check_usable(own, purposes=("client",))

    root = CertStore(home, "Root")
    pinned: list[tuple[str, str]] = [("MasterHttpsCertThumbprint", settings.master_https_cert_thumbprint)]
    if settings.next_master_https_cert_thumbprint:
        pinned.append(("NextMasterHttpsCertThumbprint", settings.next_master_https_cert_thumbprint))
    hosts = [parse_endpoint(url)[0] for url in split_endpoints(settings.master_endpoint)]
    pems: list[str] = []
    for index, (key, thumbprint) in enumerate(pinned):
        try:
            master = root.get(thumbprint)
        except CertificateNotFound:
            raise PkiError(
                f"the pinned master certificate {thumbprint} ({key}) is not in this worker's Root store "
                f"({root.path})",
                fix=_IMPORT_MASTER,
            ) from None
        check_usable(master, purposes=("server",))
        info = master.info("Root")
        for host in (host for host in hosts if not info.matches_host(host)):
            names = ", ".join(certificate_names(info)) or "no names"
            if index == 0:
                raise SettingsError(
                    f"the MasterEndpoint host {host!r} is not among the names of the master certificate "
                    f"{info.thumbprint} ({names}); TLS would refuse the connection",
                    fix="packfleet settings set worker MasterEndpoint https://NAME:PORT with one of those "
                    "names, or re-create the master certificate with this host among its names",
                )
            log.warning(
                "the next master certificate %s does not name the endpoint host %r (%s): connections "
                "will fail once the master serves it",
                info.thumbprint,
                host,
                names,
            )
        pems.append(master.cert_pem().decode("ascii"))

    return WorkerIdentity(
        home=home,
        settings=settings,
        cert_file=store.cert_path(own.thumbprint),
        key_file=store.key_path(own.thumbprint),
        certificate=own.info(store.name),
        pins=[thumbprint for _key, thumbprint in pinned],
        master_pem="".join(pems),
    )


def certificate_names(info: CertInfo) -> list[str]:
    """Every name a certificate answers to: its CNs (as MakeCert sets them) and its SAN entries."""
    return info.names


def host_matches(host: str, info: CertInfo) -> bool:
    """Whether TLS accepts ``info`` for ``host``: :meth:`packfleet.pki.CertInfo.matches_host`."""
    return info.matches_host(host)
