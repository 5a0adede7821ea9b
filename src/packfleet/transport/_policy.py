"""The one TLS policy: every SSLContext packfleet uses is built here, keyed by role.

Each choice carries its reason, because each one is a place where a cluster either stays secure or
silently stops being so.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from threading import Lock

from packfleet.errors import PkiError, SettingsError
from packfleet.transport._native import disable_session_cache, restrict_groups

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# Forward-secret AEAD suites only, for deployments that opt into TLS 1.2 (TLS 1.3's suites are all AEAD).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def tls_version(text: str) -> ssl.TLSVersion:
    """Map the ``TlsMinimumVersion`` setting ("1.3" or "1.2") to :class:`ssl.TLSVersion`."""
    try:
        return _VERSIONS[text]
    except KeyError:
        raise SettingsError(
            f'TlsMinimumVersion {text!r} is not supported; use "1.3" (default) or "1.2"',
            fix="packfleet settings set master TlsMinimumVersion 1.3",
        ) from None


def _harden(ctx: ssl.SSLContext, minimum_version: str) -> None:
    ctx.minimum_version = tls_version(minimum_version)
    # On every context, whatever its minimum version: the master's listening context lets a reload
    # lower TlsMinimumVersion on it later (HotSwapServerContext.swap), and the suites must already
    # be right then. TLS 1.3's own suites are all AEAD and forward secret and stay as they are.
    ctx.set_ciphers(_TLS12_CIPHERS)
    # X25519, P-256 and P-384 only (Mozilla modern and intermediate); OpenSSL would offer X448 and
    # P-521 as well. Clients offer these key shares, servers accept no other.
    restrict_groups(ctx)
    # No compression (CRIME) and no TLS 1.2 session tickets: a resumed session skips the certificate
    # check, which would let a revoked worker back in on a ticket issued before the revocation.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET


def _load_trust(ctx: ssl.SSLContext, trusted_pem: str, what: str) -> None:
    if not trusted_pem.strip():
        return
    try:
        ctx.load_verify_locations(cadata=trusted_pem)
    except ssl.SSLError as exc:
        raise PkiError(f"cannot load the {what}: {exc.reason or exc}") from exc


def _load_identity(ctx: ssl.SSLContext, cert_file: Path, key_file: Path, what: str) -> None:
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (ssl.SSLError, OSError) as exc:
        raise PkiError(
            f"cannot load the {what} from {cert_file} and {key_file}: "
            f"{getattr(exc, 'reason', None) or exc.strerror or exc}",
            fix="packfleet doctor",
        ) from exc


def master_server_context(
    cert_file: Path, key_file: Path, trusted_pem: str, *, minimum_version: str = "1.3"
) -> ssl.SSLContext:
    """The master's server context: its bound certificate, clients checked against its Root store.

    CERT_OPTIONAL, not CERT_REQUIRED: the join and health routes must be reachable by a machine that
    has no certificate yet. A certificate that *is* presented must chain to the Root store or the
    handshake fails; every route other than join and health then refuses a request without one.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, minimum_version)
    # TLS 1.3 tickets are the only resumption mechanism there; with none issued, every connection
    # presents and re-verifies its certificate.
    ctx.num_tickets = 0
    # TLS 1.2 resumes by session ID from the server's cache, tickets or not: with the cache off, a
    # certificate removed from the Root store is refused on its very next handshake.
    disable_session_cache(ctx)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    _load_identity(ctx, cert_file, key_file, "master certificate")
    _load_trust(ctx, trusted_pem, "master's Root store")
    return ctx


def client_context(
    cert_file: Path | None,
    key_file: Path | None,
    pinned_master_pem: str,
    *,
    minimum_version: str = "1.3",
) -> ssl.SSLContext:
    """A worker's or admin's client context: trust only the pinned master certificate(s).

    The trust anchors are exactly the Root-store certificates whose thumbprints are pinned
    (``MasterHttpsCertThumbprint`` and, during a rotation, the next one). Since packfleet's
    certificates are CA:FALSE, such an anchor can vouch only for itself, so a successful handshake
    *is* the pin check, and the host name check still applies on top.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx, minimum_version)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not pinned_master_pem.strip():
        raise PkiError(
            "no pinned master certificate is in this node's Root store",
            fix="packfleet cert import master.cer --store Root",
        )
    _load_trust(ctx, pinned_master_pem, "pinned master certificate")
    if cert_file is not None and key_file is not None:
        _load_identity(ctx, cert_file, key_file, "client certificate")
    return ctx


def trust_also(ctx: ssl.SSLContext, pinned_master_pem: str) -> None:
    """Add pinned master certificate(s) to a client context built by :func:`client_context`.

    The next master certificate of a rotation: handshakes from now on accept it beside the current
    one, while the connections open already (verified against a certificate still trusted) stay.
    """
    _load_trust(ctx, pinned_master_pem, "pinned master certificate")


def probe_context(*, minimum_version: str = "1.3") -> ssl.SSLContext:
    """A context that completes a handshake with any server, so that its certificate can be checked.

    OpenSSL verifies nothing here; the caller does, before any application data is written:
    :func:`packfleet.transport.fetch_server_certificate` only reads the certificate (to show a person
    which one a master presented after a verified connection failed) and sends nothing, while
    ``worker join`` (:class:`packfleet.transport.PinnedConnection`) compares its SHA-256 with the join
    token's pin and, only once it matched, carries the join exchange — the token's secret included —
    over this same connection. So it gets the hardening of every other context: TLS 1.3 unless
    ``minimum_version`` says 1.2 (then forward-secret AEAD suites only), no compression, no tickets.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx, minimum_version)
    ctx.check_hostname = False
    # The certificate is checked by the caller against a SHA-256 pin, not by OpenSSL against a store.
    ctx.verify_mode = ssl.CERT_NONE  # noqa: S323
    return ctx


class HotSwapServerContext:
    """A server context whose certificate and trust can be replaced without restarting the listener.

    The listening socket keeps :attr:`base`; OpenSSL calls its servername callback for every
    ClientHello (with ``None`` when the client sends no SNI, as for IP endpoints), and the callback
    moves the connection onto the current context. ``SSL_set_SSL_CTX`` swaps the certificate and the
    verify store; the verify mode stays that of the base, which is the same for every master context.
    """

    def __init__(
        self,
        initial: ssl.SSLContext,
        *,
        on_client_hello: Callable[[ssl.SSLObject], None] | None = None,
    ) -> None:
        self._lock = Lock()
        self._current = initial
        self._on_client_hello = on_client_hello
        self.base = initial
        self.base.sni_callback = self._select

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def swap(self, build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        """Build a new context and make it current; if building fails, keep the last good one.

        The new context's minimum TLS version applies from the next handshake on: OpenSSL copies
        the protocol version range into each connection from the *listening* context when it
        accepts (``SSL_new``), and moving a connection to another context in the servername
        callback (``SSL_set_SSL_CTX``) changes its certificate and trust but not that range — so
        the range is set on :attr:`base` here, or a changed ``TlsMinimumVersion`` would be a silent
        no-op until a restart.
        """
        new = build()  # raises before anything changes: the last good context stays
        with self._lock:
            self._current = new
            self.base.minimum_version = new.minimum_version
        return new

    def trust_also(self, pem: str) -> None:
        """Trust ``pem``'s certificates too, from the next handshake on, keeping the current context.

        They are loaded into a scratch context first, so that a certificate OpenSSL refuses leaves
        the current one as it was (its loading stops at the refused certificate, past the others).
        """
        if not pem.strip():
            return
        _load_trust(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), pem, "master's Root store")
        with self._lock:
            _load_trust(self._current, pem, "master's Root store")

    def _select(self, ssl_object: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        # The one place that sees every handshake begin: the master counts TLS handshakes (and so
        # their failures, which asyncio does not report) from here.
        if self._on_client_hello is not None:
            self._on_client_hello(ssl_object)
        current = self._current
        if ssl_object.context is not current:
            ssl_object.context = current


def console_server_context(
    cert_file: Path, key_file: Path, *, minimum_version: str = "1.3"
) -> ssl.SSLContext:
    """The web console's server context: server-only TLS, because browsers hold no worker certificate.

    No client certificate is asked for (CERT_NONE on a server context sends no CertificateRequest):
    people sign in with a password over this channel instead. Same versions, suites and no
    compression as every other context built here; ALPN offers HTTP/1.1, the one aiohttp speaks.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, minimum_version)
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    _load_identity(ctx, cert_file, key_file, "console certificate")
    return ctx
