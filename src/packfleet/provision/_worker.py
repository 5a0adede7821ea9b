"""``worker init``: what SSIS setup does on a Scale Out Worker node.

It creates the worker certificate (``CN=<name>;CN=<ip>``, as the seed's MakeCert line), puts it in
My and — seed step 2 — in the worker's own Root store, trusts the master certificate it is given,
writes WorkerSettings.config and exports ``worker.cer`` for the master's administrator.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from packfleet.config import (
    WorkerSettings,
    load_worker_settings,
    save_worker_settings,
    settings_path,
    split_endpoints,
)
from packfleet.errors import UsageError
from packfleet.pki import (
    CertStore,
    Credential,
    check_usable,
    create_self_signed,
    export_certificate,
    load_credential,
    local_ips,
)
from packfleet.thumbprint import normalize_thumbprint
from packfleet.transport import parse_endpoint

log = logging.getLogger("packfleet.provision")

WORKER_CER = "worker.cer"


@dataclass(frozen=True)
class WorkerInit:
    """What ``worker init`` made; ``warnings`` are problems worth telling the person now."""

    home: Path
    thumbprint: str
    agent_id: str
    display_name: str
    master_endpoint: str
    master_thumbprint: str
    worker_cer: Path
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "home": str(self.home),
            "thumbprint": self.thumbprint,
            "agent_id": self.agent_id,
            "display_name": self.display_name,
            "master_endpoint": self.master_endpoint,
            "master_thumbprint": self.master_thumbprint,
            "worker_cer": str(self.worker_cer),
            "warnings": self.warnings,
        }


def trust_master_certificate(home: Path, master_cert: Path, endpoint: str) -> tuple[str, list[str]]:
    """Put the master certificate into this node's Root store (seed step 5.1); warn on a host mismatch."""
    cred = load_credential(master_cert)
    check_usable(Credential(cred.certificate, None), purposes=("server",))
    info = CertStore(home, "Root").add(Credential(cred.certificate, None))
    warnings = []
    for url in split_endpoints(endpoint):
        host, _port = parse_endpoint(url)
        if info.matches_host(host):
            continue
        names = ", ".join([*info.san_dns, *info.san_ip]) or "no names"
        warnings.append(
            f"the host {host!r} of {url} is not among the master certificate's names ({names}); "
            "TLS will refuse it. Use an endpoint with one of those names, or re-create the master "
            f"certificate with --cn {host}"
        )
    return info.thumbprint, warnings


def create_worker_certificate(
    home: Path, names: list[str], *, key_type: str = "ecdsa-p256", days: int = 365
) -> Credential:
    """Make the worker certificate ``CN=<name>;CN=<ip>`` and store it as the seed's MakeCert line does."""
    cred = create_self_signed(names, key_type=key_type, days=days)
    CertStore(home, "My").add(cred)  # MakeCert ... -ss My -sr LocalMachine
    CertStore(home, "Root").add(Credential(cred.certificate, None))  # seed step 2: also in its own Root
    return cred


def init_worker(
    home: Path,
    *,
    master_url: str,
    master_cert: Path | None = None,
    master_thumbprint: str | None = None,
    name: str | None = None,
    ip: str | None = None,
    key_type: str = "ecdsa-p256",
    days: int = 365,
) -> WorkerInit:
    """Set up a worker node in ``home`` to talk to the master at ``master_url``.

    ``master_url`` may list several masters, comma-separated (``--master`` given more than once):
    every host must be a name of the master certificate, which they all serve.

    >>> init_worker(Path("/srv/w"), master_url="https://127.0.0.1:8391",
    ...             master_cert=Path("/srv/m/master.cer"), name="worker1", ip="127.0.0.2")  # doctest: +SKIP
    """
    # Refuse anything but https://host:port before touching the stores. Several URLs (masters that
    # share one PostgreSQL catalog) come comma-joined; the worker fails over between them in turn.
    urls = split_endpoints(master_url)
    if not urls:
        raise UsageError("no master URL given", fix="packfleet worker init --master https://MASTER:8391")
    for url in urls:
        parse_endpoint(url, key="--master", fix="packfleet worker init --master https://MASTER:8391")
    master_url = ",".join(dict.fromkeys(urls))
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    display_name = name or socket.gethostname()
    address = ip or next(iter(local_ips()), "127.0.0.1")
    names = list(dict.fromkeys([display_name, address]))

    warnings: list[str] = []
    pinned = ""
    if master_cert is not None:
        pinned, warnings = trust_master_certificate(home, master_cert, master_url)
    elif master_thumbprint:
        pinned = normalize_thumbprint(master_thumbprint, what="--master-thumbprint")
        if not CertStore(home, "Root").contains(pinned):
            raise UsageError(
                f"the master certificate {pinned} is not in this node's Root store",
                fix="pass --master-cert master.cer (copied from the master's home)",
            )
    else:
        warnings.append(
            "no master certificate given: the worker cannot connect until it is in the Root store "
            "and pinned (packfleet cert import master.cer --store Root; packfleet settings set worker "
            "MasterHttpsCertThumbprint T)"
        )

    cred = create_worker_certificate(home, names, key_type=key_type, days=days)

    existing = load_worker_settings(home) if settings_path(home, "worker").exists() else WorkerSettings()
    settings = replace(
        existing,
        display_name=display_name,
        master_endpoint=master_url,
        master_https_cert_thumbprint=pinned or existing.master_https_cert_thumbprint,
        worker_https_cert_thumbprint=cred.thumbprint,
    )
    save_worker_settings(home, settings)
    settings = load_worker_settings(home)  # AgentId generated on first save
    worker_cer = export_certificate(cred, home / WORKER_CER, mode=0o600)
    log.info("worker %s initialised in %s with certificate %s", display_name, home, cred.thumbprint)
    return WorkerInit(
        home=home,
        thumbprint=cred.thumbprint,
        agent_id=settings.agent_id,
        display_name=display_name,
        master_endpoint=master_url,
        master_thumbprint=settings.master_https_cert_thumbprint,
        worker_cer=worker_cer,
        warnings=warnings,
    )
