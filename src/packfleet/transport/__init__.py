"""TLS policy and HTTPS transport between nodes: one place for every SSLContext and TLS explanation."""

from packfleet.transport._client import MasterClient, parse_endpoint
from packfleet.transport._explain import (
    PeerCertificate,
    explain_client_failure,
    explain_handshake_failure,
    fetch_server_certificate,
)
from packfleet.transport._failover import EndpointList, FailoverClient, connect_master
from packfleet.transport._native import presented_certificate
from packfleet.transport._pinned import PinnedConnection
from packfleet.transport._policy import (
    HotSwapServerContext,
    client_context,
    console_server_context,
    master_server_context,
    probe_context,
    tls_version,
    trust_also,
)

# The fixes the TLS explanations give, kept where callers have always found them; the trust rules own them.
from packfleet.trust import NEW_ADMIN_FIX, READMIT_FIX

__all__ = [
    "NEW_ADMIN_FIX",
    "READMIT_FIX",
    "EndpointList",
    "FailoverClient",
    "HotSwapServerContext",
    "MasterClient",
    "PeerCertificate",
    "PinnedConnection",
    "client_context",
    "console_server_context",
    "connect_master",
    "explain_client_failure",
    "explain_handshake_failure",
    "fetch_server_certificate",
    "master_server_context",
    "parse_endpoint",
    "presented_certificate",
    "probe_context",
    "tls_version",
    "trust_also",
]
