"""Admission checks: certificates the master would pin but could never accept, said up front.

``manager worker add`` refuses a certificate that no handshake can complete (signed by an issuer
the master does not pin) or that is signed with SHA-1, rather than pinning it and leaving the worker
to fail at every connection. On start and reload the master warns, naming the file, about each
certificate in its Root store it will never accept; ``doctor`` reports the same list. Both are the
trust rules' (:func:`packfleet.trust.admission_refusal`, :func:`packfleet.trust.root_store_rule`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from packfleet.master._logsafe import safe
from packfleet.trust import Finding, root_store_rule
from packfleet.trust import admission_refusal as admission_refusal  # where the worker routes import it

log = logging.getLogger("packfleet.master")


def warn_never_accepted(home: Path, *, now: datetime, serving: str | None) -> list[Finding]:
    """Log one warning per Root certificate the master will never accept (start and reload)."""
    found = [f for f in root_store_rule(home, now=now, serving=serving) if f.severity != "ok"]
    for finding in found:
        log.warning("%s; fix: %s", safe(finding.message, 600), finding.fix)
    return found
