"""The web console: Scale Out Manager in a browser, served by the master on its own listener.

Server-only TLS (browsers hold no client certificate), users with argon2id passwords and roles
(viewer reads; operator also starts, re-runs and stops executions, and enables, disables, drains
and edits workers; admin also connects and deletes workers), sessions in encrypted ``__Host-``
cookies, a CSRF token on every change, a strict Content-Security-Policy, and a live tail of event
messages over Server-Sent Events. The master starts it with an object that implements :class:`Fleet`::

    console = ConsoleServer(fleet, home, host="127.0.0.1", port=8392, context=build_context)
    await console.start()
    print(console.url)      # https://127.0.0.1:8392/
"""

from packfleet.console._fleet import EventTicket, Fleet, MasterFacts
from packfleet.console._passwords import check_password_policy, hash_password, verify_password
from packfleet.console._server import ConsoleServer, build_app
from packfleet.console._sessions import SignInLimiter
from packfleet.console._web import CSP

__all__ = [
    "CSP",
    "ConsoleServer",
    "EventTicket",
    "Fleet",
    "MasterFacts",
    "SignInLimiter",
    "build_app",
    "check_password_policy",
    "hash_password",
    "verify_password",
]
