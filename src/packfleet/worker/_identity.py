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
from datetime import UTC, datetime
from pathlib import Path

from packfleet.config import WorkerSettings, load_worker_settings, split_endpoints
from packfleet.pki import CertInfo, CertStore
from packfleet.transport import MasterClient, client_context, connect_master, parse_endpoint
from packfleet.trust import (
    WORKER,
    own_certificate_rule,
    pin_keys,
    pinned_master_rule,
    raise_first,
    worker_settings_rule,
)

log = logging.getLogger("packfleet.worker")


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


def load_identity(home: Path, *, now: datetime | None = None) -> WorkerIdentity:
    """Read WorkerSettings.config and the stores of ``home``; raise a packfleet error naming the fix.

    The checks are the trust rules (:mod:`packfleet.trust`) that ``doctor`` lists: the settings a
    worker needs, its own certificate and key, and each pinned master certificate against every
    endpoint host. The first error is raised; a warning (a next pin that does not name a host) is
    logged.
    """
    moment = now or datetime.now(UTC)
    settings = load_worker_settings(home)
    raise_first(worker_settings_rule(home, settings))
    endpoints = [parse_endpoint(url) for url in split_endpoints(settings.master_endpoint)]
    own = own_certificate_rule(
        home,
        WORKER,
        store_name=settings.store_name,
        thumbprint=settings.worker_https_cert_thumbprint,
        now=moment,
    )
    pinned, masters = pinned_master_rule(home, settings, endpoints, now=moment)
    # A worker whose own certificate is near its end still starts (and renews it); only errors stop it.
    raise_first([*own, *pinned])
    for finding in pinned:
        if finding.severity == "warning" and finding.check == "worker.master-host":
            log.warning("%s: %s", finding.message, finding.fix)
    store = CertStore(home, settings.store_name)
    thumbprint = settings.worker_https_cert_thumbprint
    return WorkerIdentity(
        home=home,
        settings=settings,
        cert_file=store.cert_path(thumbprint),
        key_file=store.key_path(thumbprint),
        certificate=store.info(thumbprint),
        pins=[thumbprint for _key, thumbprint in pin_keys(settings)],
        master_pem="".join(root_pem(home, info.thumbprint) for info in masters),
    )


def root_pem(home: Path, thumbprint: str) -> str:
    """The PEM of a certificate in the Root store."""
    return CertStore(home, "Root").get(thumbprint).cert_pem().decode("ascii")


def certificate_names(info: CertInfo) -> list[str]:
    """Every name a certificate answers to: its CNs (as MakeCert sets them) and its SAN entries."""
    return info.names


def host_matches(host: str, info: CertInfo) -> bool:
    """Whether TLS accepts ``info`` for ``host``: :meth:`packfleet.pki.CertInfo.matches_host`."""
    return info.matches_host(host)
