"""Binding vs SSLCertThumbprint: the certificate the master serves is the one its settings name.

On Windows, HTTP.SYS serves the certificate bound to ``0.0.0.0:8391`` whatever MasterSettings.config
says, and SSIS's master refuses to work when ``SSLCertThumbprint`` names another one (the seed's
"change the master certificate" procedure edits both).
"""

from __future__ import annotations

from pathlib import Path

from packfleet.config import Binding, MasterSettings, format_ipport, get_binding, settings_path
from packfleet.errors import PackfleetError
from packfleet.trust._finding import Finding, error, errors, from_exception, ok

CHECK = "master.binding"
#: HTTP.SYS bindings name the wildcard address; the master looks its certificate up there.
WILDCARD = "0.0.0.0"  # noqa: S104 - a key in bindings.json, not an address anything listens on


def binding_rule(home: Path, settings: MasterSettings) -> list[Finding]:
    """The binding of ``0.0.0.0:<PortNumber>`` exists and names the certificate SSLCertThumbprint names."""
    return _judge(home, settings)[0]


def served_binding(home: Path, settings: MasterSettings) -> Binding:
    """The binding the master serves, when :func:`binding_rule` finds it right; else its first error."""
    findings, binding = _judge(home, settings)
    refused = errors(findings)
    if binding is None or refused:
        raise refused[0].exception()
    return binding


def _judge(home: Path, settings: MasterSettings) -> tuple[list[Finding], Binding | None]:
    port = settings.port_number
    ipport = format_ipport(WILDCARD, port)
    try:
        binding = get_binding(home, ipport)
    except PackfleetError as exc:
        return [from_exception(CHECK, exc)], None
    configured = settings.ssl_cert_thumbprint
    source = settings_path(home, "master")
    if binding is None:
        return [
            error(
                CHECK,
                f"no certificate is bound to {ipport} in {home / 'bindings.json'} (PortNumber {port})",
                "the master has nothing to serve (the seed's `netsh http add sslcert` step)",
                f"packfleet binding add --port {port} --certhash {configured or 'THUMBPRINT'} --store Root",
            )
        ], None
    if configured == binding.certhash:
        return [
            ok(
                CHECK,
                f"{ipport} is bound to {binding.certhash} ({binding.certstorename} store), as "
                "SSLCertThumbprint says",
            )
        ], binding
    if not configured:
        # Nothing to keep on the settings side: the only fix is to name the bound certificate.
        fix = f"packfleet settings set master SSLCertThumbprint {binding.certhash}"
    else:
        fix = (
            f"packfleet settings set master SSLCertThumbprint {binding.certhash}   (keep the binding), "
            f"or: packfleet binding delete --port {port} && packfleet binding add --port {port} "
            f"--certhash {configured} --store {binding.certstorename} --appid {binding.appid}   "
            "(keep the setting)"
        )
    return [
        error(
            CHECK,
            f"the binding on {ipport} serves certificate {binding.certhash} but SSLCertThumbprint in "
            f"{source} is {configured or '(empty)'}",
            "the master refuses to start or reload until they name the same certificate",
            fix,
        )
    ], binding
