"""``doctor`` on a master home: settings, binding, served certificate, key, names, catalog, admin.

Each check mirrors one step of the seed's "change the master certificate" procedure and says what a
half-done step leaves behind: a binding that names another certificate than SSLCertThumbprint (steps
2 and 3 done apart), a certificate without its key (``MakeCert`` without ``-pe``), a key only root can
read, a MasterAddress host the new certificate does not name.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import sqlalchemy
from alembic.config import Config
from alembic.script import ScriptDirectory

from packfleet import trust
from packfleet.catalog import Catalog
from packfleet.config import (
    MasterSettings,
    format_ipport,
    get_binding,
    load_manager_settings,
    load_master_settings,
    settings_path,
)
from packfleet.doctor._common import from_rules, read_settings, service_account
from packfleet.doctor._findings import Finding, error, ok, warning
from packfleet.errors import PackfleetError, TlsError
from packfleet.master import (
    CLOCK_SKEW_WARNING_SECONDS,
    SERVICE_NAME,
    clock_warning,
    read_listening,
)
from packfleet.pki import CertInfo, CertStore, machine_names
from packfleet.transport import fetch_server_certificate, parse_endpoint


def check_master(home: Path, *, now: datetime, unit: Path | None = None, probe: bool = True) -> list[Finding]:
    """Every master check, in the order a person would mend them."""
    settings, parsed = read_settings(home, "master", load_master_settings)
    findings = [parsed]
    if settings is None:
        return findings
    served = _binding(home, settings, findings)
    if served is not None:
        findings += _served_certificate(home, settings, served, now, unit)
        if probe:
            findings += _listening(home, settings, served[0])
    catalog_findings = _catalog(home, settings)
    findings += catalog_findings
    findings += _worker_clocks(home, settings)
    findings += _admin(home, now)
    findings += _root_store(home, settings, now)
    if all(f.severity == "ok" for f in catalog_findings):
        findings += _refused_binds(home, settings)
    return findings


def _root_store(home: Path, settings: MasterSettings, now: datetime) -> list[Finding]:
    """Root certificates the master will never accept from a client (it warns at start too)."""
    return from_rules(trust.root_store_rule(home, now=now, serving=settings.ssl_cert_thumbprint))


def _refused_binds(home: Path, settings: MasterSettings) -> list[Finding]:
    """Certificates whose heartbeat claimed an existing worker and waits for an administrator."""
    url = settings.resolved_catalog_url(home)
    try:
        with Catalog.open(
            url, connect_timeout=settings.sql_connection_timeout_secs, upgrade=False
        ) as catalog:
            refused = catalog.refused_binds()
    except PackfleetError as exc:
        return [error("master.bindings", exc.message, exc.fix)]
    return [
        warning(
            "master.bindings",
            f"certificate {thumbprint} asked to be worker {agent_id} and was refused: {reason}",
            fix=f"if it is that worker's new certificate: packfleet manager worker connect {agent_id} "
            f"--cert {thumbprint}",
        )
        for thumbprint, agent_id, reason in refused
    ]


def _binding(home: Path, settings: MasterSettings, findings: list[Finding]) -> tuple[str, str] | None:
    """Binding for 0.0.0.0:<PortNumber> vs SSLCertThumbprint; the (thumbprint, store) it serves."""
    findings += from_rules(trust.binding_rule(home, settings))
    try:
        binding = get_binding(home, format_ipport(trust.WILDCARD, settings.port_number))
    except PackfleetError:
        return None  # the rule reported it
    return None if binding is None else (binding.certhash, binding.certstorename)


def _served_certificate(
    home: Path, settings: MasterSettings, served: tuple[str, str], now: datetime, unit: Path | None
) -> list[Finding]:
    """The bound certificate, its key, key access and expiry (the rule the master's loader applies),
    then the names it must carry."""
    thumbprint, store_name = served
    account, problem = service_account("master.key-access", home, f"{SERVICE_NAME}.service", unit)
    judged = trust.own_certificate_rule(
        home, trust.MASTER, store_name=store_name, thumbprint=thumbprint, now=now, account=account
    )
    findings = from_rules(judged)
    if problem is not None:
        findings.append(problem)
    store = CertStore(home, store_name)
    if any(f.severity == "error" and f.check == "master.certificate" for f in judged):
        return findings
    try:
        info = store.info(thumbprint)
    except PackfleetError:
        return findings
    findings.append(_address(home, settings, info))
    findings.append(_host_names(info))
    return findings


def _host_names(info: CertInfo) -> Finding:
    """Which of this host's names the master certificate lacks: with several masters behind DNS or
    a load balancer, a worker may reach this one by any of them. Said, not failed: a certificate
    made for one name (``--cn 10.0.0.5``) is a normal set-up, and MasterAddress is checked apart."""
    missing = [name for name in machine_names() if not info.matches_host(name)]
    if not missing:
        return ok("master.names", "the master certificate covers every name of this host")
    return ok(
        "master.names",
        f"names of this host the master certificate does not cover: {', '.join(missing)} "
        "(workers and load balancers must reach this master by a name it covers)",
    )


def _address(home: Path, settings: MasterSettings, info: CertInfo) -> Finding:
    if not settings.master_address:
        return warning(
            "master.address",
            f"MasterAddress is empty in {settings_path(home, 'master')}: join tokens and workers need the "
            "URL workers reach this master at",
            fix=f"packfleet settings set master MasterAddress https://{info.names[0]}:{settings.port_number}",
        )
    try:
        host, _port = parse_endpoint(settings.master_address, kind="master", key="MasterAddress")
    except PackfleetError as exc:
        return error("master.address", f"MasterAddress: {exc.message}", exc.fix)
    names = ", ".join(info.names) or "no names"
    if not info.matches_host(host):
        return error(
            "master.address",
            f"the MasterAddress host {host!r} is not among the names of the master certificate "
            f"{info.thumbprint} ({names}); every worker using that address would fail the TLS host check",
            fix=f"packfleet settings set master MasterAddress https://{info.names[0]}:"
            f"{settings.port_number}   (or re-create the certificate with --cn {host})",
        )
    return ok("master.address", f"MasterAddress host {host!r} is among the certificate's names ({names})")


def _listening(home: Path, settings: MasterSettings, bound: str) -> list[Finding]:
    """If a master of this home runs, does it serve the bound certificate where it really listens?

    The address comes from ``master.listen``, which the running master writes (``master run
    --host/--port`` may differ from PortNumber and from 127.0.0.1); without one, PortNumber on
    127.0.0.1 is probed.
    """
    running = read_listening(home)
    host, port = (running.probe_host, running.port) if running else ("127.0.0.1", settings.port_number)
    where = f"{host}:{port}"
    try:
        peer = fetch_server_certificate(host, port, timeout=2.0)
    except (OSError, TlsError, ValueError) as exc:
        if running is not None:
            return [
                error(
                    "master.serving",
                    f"the master of this home (pid {running.pid}) says it listens on "
                    f"{running.host}:{running.port}, but {where} does not answer over TLS: {exc}",
                    fix=f"see its log; restart it: systemctl restart {SERVICE_NAME}",
                )
            ]
        return [ok("master.serving", f"no master answers on {where} (not running here)")]
    if running is not None and running.port != settings.port_number:
        where += f" (PortNumber in MasterSettings.config is {settings.port_number})"
    if peer.thumbprint != bound:
        return [
            error(
                "master.serving",
                f"the master on {where} serves certificate {peer.thumbprint} but the binding names "
                f"{bound}: its last reload was refused (see its log) or it was not reloaded",
                fix=f"mend the findings above, then: systemctl reload {SERVICE_NAME} (or kill -HUP the "
                "master)",
            )
        ]
    return [ok("master.serving", f"the master on {where} serves the bound certificate {bound}")]


def _catalog(home: Path, settings: MasterSettings) -> list[Finding]:
    url = settings.resolved_catalog_url(home)
    check = "master.catalog"
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return [
                error(
                    check,
                    f"the catalog database {path} does not exist",
                    fix="packfleet master init (or: packfleet master run, which creates and migrates it)",
                )
            ]
    try:
        catalog = Catalog.open(url, connect_timeout=settings.sql_connection_timeout_secs, upgrade=False)
    except PackfleetError as exc:
        return [error(check, exc.message, exc.fix)]
    shown = catalog.url
    catalog.close()
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    current = _revision(url, settings.sql_connection_timeout_secs)
    if current != head:
        return [
            error(
                check,
                f"the catalog {shown} is at schema revision {current or '(none)'}, not {head}: it is "
                "not migrated",
                fix="packfleet master run (migrates at start)",
            )
        ]
    return [ok(check, f"catalog {shown} answers and is migrated (revision {head})")]


def _worker_clocks(home: Path, settings: MasterSettings) -> list[Finding]:
    """Workers whose clock was off the master's at their last heartbeat (they report their time)."""
    check = "master.worker-clocks"
    try:
        catalog = Catalog.open(
            settings.resolved_catalog_url(home),
            connect_timeout=settings.sql_connection_timeout_secs,
            upgrade=False,
        )
    except PackfleetError:
        return []  # master.catalog already says why
    try:
        workers = catalog.list_workers()
    except PackfleetError:
        return []  # not migrated: master.catalog says so
    finally:
        catalog.close()
    findings = [
        warning(check, text, fix="timedatectl set-ntp true (on that worker), then: packfleet doctor (there)")
        for w in workers
        if (text := clock_warning(f"{w.display_name!r} ({w.agent_id})", w.clock_skew_seconds))
    ]
    measured = sum(w.clock_skew_seconds is not None for w in workers)
    return findings or [
        ok(check, f"{measured} worker clock(s) measured, all within {CLOCK_SKEW_WARNING_SECONDS:g} s")
    ]


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "packfleet.catalog:migrations")
    config.set_main_option("path_separator", "os")
    return config


def _revision(url: str, timeout: int) -> str | None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            try:
                return conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
            except sqlalchemy.exc.SQLAlchemyError:
                return None
    finally:
        engine.dispose()


def _admin(home: Path, now: datetime) -> list[Finding]:
    """The manager's admin certificate: the rule the manager's loader applies (in My with its own key,
    fit for a client, in date), this master's Root store trusting it, and the manager's pins."""
    check = "master.admin"
    path = settings_path(home, "manager")
    if not path.exists():
        return [
            warning(
                check,
                f"{path} does not exist: this home has no admin certificate for `packfleet manager`",
                fix=trust.NEW_ADMIN_FIX,
            )
        ]
    try:
        settings = load_manager_settings(home)
    except PackfleetError as exc:
        return [error(check, exc.message, exc.fix)]
    judged = trust.admin_certificate_rule(home, settings, now=now, master_home=home)
    # doctor names the admin certificate's findings master.admin, and its dates master.admin-expiry.
    named = [
        dataclasses.replace(f, check="master.admin-expiry" if f.check == "manager.expiry" else check)
        for f in judged
    ]
    # The manager's pins, as its loader judges them (manager.master-pin).
    return from_rules([*named, *trust.pins_in_root_rule(home, settings, role="manager")])
