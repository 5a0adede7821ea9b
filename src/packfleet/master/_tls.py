"""What the master serves: the certificate its binding names, checked against SSLCertThumbprint.

On Windows, HTTP.SYS serves the certificate bound to ``0.0.0.0:8391`` whatever MasterSettings.config
says, and SSIS's master refuses to work when ``SSLCertThumbprint`` names another one (the seed's
"change the master certificate" procedure edits both). packfleet makes that disagreement an error at
start and at reload, naming both thumbprints and the commands that reconcile them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from packfleet.config import (
    Binding,
    MasterSettings,
    format_ipport,
    get_binding,
    load_master_settings,
    settings_path,
)
from packfleet.errors import SettingsError
from packfleet.pki import CertStore
from packfleet.transport import master_server_context

#: HTTP.SYS bindings name the wildcard address; the master looks its certificate up there.
WILDCARD = "0.0.0.0"  # noqa: S104 - a key in bindings.json, not an address the tests listen on


@dataclass(frozen=True)
class TlsMaterial:
    """Everything one server SSLContext is built from, read from the home in one go."""

    settings: MasterSettings
    binding: Binding
    cert_file: Path
    key_file: Path
    trusted_pem: str

    @property
    def thumbprint(self) -> str:
        return self.binding.certhash

    def context(self) -> ssl.SSLContext:
        return master_server_context(
            self.cert_file,
            self.key_file,
            self.trusted_pem,
            minimum_version=self.settings.tls_minimum_version,
        )


def load_tls_material(home: Path) -> TlsMaterial:
    """Read settings, binding, bound certificate and Root store; refuse any disagreement."""
    settings = load_master_settings(home)
    port = settings.port_number
    ipport = format_ipport(WILDCARD, port)
    binding = get_binding(home, ipport)
    configured = settings.ssl_cert_thumbprint
    if binding is None:
        named = configured or "THUMBPRINT"
        raise SettingsError(
            f"no certificate is bound to {ipport} in {home / 'bindings.json'}, so the master has "
            "nothing to serve (the seed's `netsh http add sslcert` step)",
            fix=f"packfleet binding add --port {port} --certhash {named} --store Root",
        )
    if not configured:
        raise SettingsError(
            f"SSLCertThumbprint is empty in {settings_path(home, 'master')}, but the binding on "
            f"{ipport} serves certificate {binding.certhash}",
            fix=f"packfleet settings set master SSLCertThumbprint {binding.certhash}",
        )
    if configured != binding.certhash:
        raise SettingsError(
            f"the binding on {ipport} serves certificate {binding.certhash} but SSLCertThumbprint "
            f"in {settings_path(home, 'master')} is {configured}; they must name the same certificate",
            fix=f"packfleet settings set master SSLCertThumbprint {binding.certhash}   (keep the "
            f"binding), or: packfleet binding delete --ip {WILDCARD} --port {port} && packfleet "
            f"binding add --port {port} --certhash {configured} --store Root   (keep the setting)",
        )
    store = CertStore(home, binding.certstorename)
    cred = store.get(binding.certhash)  # CertificateNotFound names the store and the listing command
    if cred.private_key is None:
        raise SettingsError(
            f"certificate {binding.certhash} in store {store.name} has no private key beside it, "
            "so the master cannot serve it",
            fix=f"packfleet cert import master.pfx --password P --store {store.name}",
        )
    return TlsMaterial(
        settings=settings,
        binding=binding,
        cert_file=store.cert_path(binding.certhash),
        key_file=store.key_path(binding.certhash),
        trusted_pem=CertStore(home, "Root").trust_bundle_pem(),
    )
