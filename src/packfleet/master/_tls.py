"""What the master serves: the certificate its binding names, checked against SSLCertThumbprint.

On Windows, HTTP.SYS serves the certificate bound to ``0.0.0.0:8391`` whatever MasterSettings.config
says, and SSIS's master refuses to work when ``SSLCertThumbprint`` names another one (the seed's
"change the master certificate" procedure edits both). packfleet makes that disagreement an error at
start and at reload, naming both thumbprints and the commands that reconcile them.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packfleet.config import Binding, MasterSettings, load_master_settings
from packfleet.pki import CertStore
from packfleet.transport import master_server_context
from packfleet.trust import MASTER, own_certificate_rule, raise_first, served_binding
from packfleet.trust import WILDCARD as WILDCARD  # the master's default listen address names it too


@dataclass(frozen=True)
class TlsMaterial:
    """Everything one server SSLContext is built from, read from the home in one go."""

    settings: MasterSettings
    binding: Binding
    cert_file: Path
    key_file: Path
    #: The Root store's certificates as PEM, by thumbprint: the clients this master accepts.
    trusted: Mapping[str, str]

    @property
    def thumbprint(self) -> str:
        return self.binding.certhash

    def context(self) -> ssl.SSLContext:
        return master_server_context(
            self.cert_file,
            self.key_file,
            "".join(self.trusted.values()),
            minimum_version=self.settings.tls_minimum_version,
        )

    def trust_added_to(self, before: TlsMaterial) -> str | None:
        """The PEM of the certificates trusted here and not in ``before``, if that is all that differs.

        Then the context serving ``before`` can trust them too (a worker added, a rotation's next
        certificate announced) instead of being built again: building one loads every Root
        certificate, a quarter of a second on the event loop for a thousand workers (make bench,
        rotation). None when anything else changed (the certificate served, the TLS version, a
        certificate no longer trusted): a context cannot forget a certificate, so a new one is built.
        """
        same_serving = (self.binding, self.cert_file, self.key_file) == (
            before.binding,
            before.cert_file,
            before.key_file,
        )
        same_version = self.settings.tls_minimum_version == before.settings.tls_minimum_version
        # Every certificate trusted before still is, with the same text (a file edited in place
        # under its thumbprint's name is a change like any other).
        kept = all(self.trusted.get(thumbprint) == pem for thumbprint, pem in before.trusted.items())
        if not (same_serving and same_version and kept):
            return None
        return "".join(pem for thumbprint, pem in self.trusted.items() if thumbprint not in before.trusted)


def load_tls_material(home: Path) -> TlsMaterial:
    """Read settings, binding, bound certificate and Root store; refuse any disagreement.

    The refusals are the trust rules' findings (:mod:`packfleet.trust`), the ones ``doctor`` lists:
    the binding against SSLCertThumbprint, then the bound certificate and its key.
    """
    settings = load_master_settings(home)
    binding = served_binding(home, settings)
    # Dates are not judged here: a master with an expired certificate still starts, so that
    # `doctor` and the workers' explanations can say so, and a rotation can replace it live.
    raise_first(
        own_certificate_rule(
            home, MASTER, store_name=binding.certstorename, thumbprint=binding.certhash, profile=False
        )
    )
    store = CertStore(home, binding.certstorename)
    return TlsMaterial(
        settings=settings,
        binding=binding,
        cert_file=store.cert_path(binding.certhash),
        key_file=store.key_path(binding.certhash),
        trusted=CertStore(home, "Root").trust_pems(),
    )
