"""The master: an aiohttp HTTPS server that hands package executions to workers over mutual TLS.

It serves the certificate that its binding names for ``0.0.0.0:<PortNumber>`` (the seed's ``netsh
http add sslcert`` step), maps each client certificate's thumbprint to a principal or worker through
the catalog, long-polls workers for tasks, and reloads its certificates and trust on SIGHUP::

    async with MasterServer(home, host="127.0.0.1", port=0) as server:
        print(server.port)        # 40211: the ephemeral port it listens on
        await server.reload()     # after `packfleet cert import worker.cer --store Root`

``run_master(home)`` is ``packfleet master run``: serve until SIGTERM/SIGINT, reload on SIGHUP.
"""

from packfleet.master._api import DEFAULT_MAX_BODY, DEPLOY_MAX_BODY, Endpoint, openapi_document
from packfleet.master._listen import Listening, read_listening
from packfleet.master._server import ENDPOINTS, MasterServer, build_app, run_master, serve
from packfleet.master._service import SERVICE_NAME, enable_hint, systemd_unit
from packfleet.master._times import CLOCK_SKEW_WARNING_SECONDS, clock_warning
from packfleet.master._tls import TlsMaterial, load_tls_material
from packfleet.master._wakeup import LocalWakeups, Ticket, Wakeups

__all__ = [
    "CLOCK_SKEW_WARNING_SECONDS",
    "DEFAULT_MAX_BODY",
    "DEPLOY_MAX_BODY",
    "ENDPOINTS",
    "SERVICE_NAME",
    "Endpoint",
    "Listening",
    "LocalWakeups",
    "MasterServer",
    "Ticket",
    "TlsMaterial",
    "Wakeups",
    "build_app",
    "clock_warning",
    "enable_hint",
    "load_tls_material",
    "openapi_document",
    "read_listening",
    "run_master",
    "serve",
    "systemd_unit",
]
