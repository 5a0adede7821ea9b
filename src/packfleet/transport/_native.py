"""Two OpenSSL settings that Python's ``ssl`` module does not expose, set on one SSLContext at a time.

- **Key exchange groups.** Python 3.11 has no set-groups call (``set_ecdh_curve`` takes one group),
  and OpenSSL's default list offers X448 and P-521 too, outside Mozilla's modern and intermediate
  profiles. The process-wide alternative, ``OPENSSL_CONF`` with ``Groups = ...``, is read once when
  OpenSSL initializes, which in a Python process is at ``import ssl`` — before any of this
  project's code runs, so it would need a re-exec of every entry point, would miss contexts built
  by a process that embeds packfleet (the tests), and would replace the system's own
  ``openssl.cnf``.
- **The TLS 1.2 session-ID cache.** ``OP_NO_TICKET`` and ``num_tickets = 0`` stop tickets, but a
  TLS 1.2 server still caches sessions by ID (CPython sets a session ID context, so resumption works
  with client certificates) and a resumed session skips the certificate check: a certificate removed
  from the Root store would keep working for clients that resume. No option or ``SSL_CONF`` command
  turns the cache off.

Both go through ``SSL_CTX_ctrl`` on the context's ``SSL_CTX *``, which CPython keeps as the first
field after the object header of every ``ssl.SSLContext`` (``PySSLContext``, unchanged since 3.0).
The pointer is checked against the context's own options and verify mode, read back through OpenSSL,
before anything is written; if that check fails, building the context fails (TransportError)
rather than serving a weaker one.
"""

from __future__ import annotations

import _ssl
import ctypes
import ssl
import sys
from functools import cache

from packfleet.errors import TransportError

#: Mozilla's modern and intermediate profiles: X25519, then the two NIST curves clients most offer.
GROUPS = "X25519:P-256:P-384"

# From openssl/ssl.h (OpenSSL 1.1.1 and 3.x).
_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_GET_SESS_CACHE_MODE = 45
_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_SESS_CACHE_OFF = 0
_VERIFY_MODES = {0: ssl.CERT_NONE, 1: ssl.CERT_OPTIONAL, 3: ssl.CERT_REQUIRED}

_FIX = (
    "use CPython 3.11 or later linked to OpenSSL 1.1.1 or 3.x "
    "(check: python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)')"
)


@cache
def _libssl() -> ctypes.CDLL:
    # The _ssl extension is linked to libssl; dlsym through its handle finds the very library (and
    # the very SSL_CTX structures) that Python's ssl module uses, not another copy on the system.
    # A Python with _ssl built in (no shared object) has libssl's symbols in the process itself.
    lib = ctypes.CDLL(getattr(_ssl, "__file__", None))
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    return lib


def _ssl_ctx(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of ``ctx``, checked by reading two of its settings back through OpenSSL."""
    if sys.implementation.name != "cpython" or type(ctx).__basicsize__ < object.__basicsize__ + 8:
        raise TransportError("this Python's ssl module does not have CPython's layout", fix=_FIX)
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer:
        raise TransportError("cannot reach the OpenSSL context of an ssl.SSLContext", fix=_FIX)
    lib = _libssl()
    # SSL_VERIFY_PEER (1) and SSL_VERIFY_FAIL_IF_NO_PEER_CERT (2) map to Python's three modes.
    mode = _VERIFY_MODES.get(lib.SSL_CTX_get_verify_mode(pointer) & 3)
    if lib.SSL_CTX_get_options(pointer) != int(ctx.options) or mode != ctx.verify_mode:
        raise TransportError("ssl.SSLContext keeps its OpenSSL context elsewhere", fix=_FIX)
    return pointer


def restrict_groups(ctx: ssl.SSLContext, groups: str = GROUPS) -> None:
    """Offer and accept only ``groups`` for the key exchange (``SSL_CTX_set1_groups_list``)."""
    if _libssl().SSL_CTX_ctrl(_ssl_ctx(ctx), _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode()) != 1:
        raise TransportError(f"OpenSSL refused the key exchange groups {groups}", fix=_FIX)


def disable_session_cache(ctx: ssl.SSLContext) -> None:
    """Turn the server's session cache off (``SSL_CTX_set_session_cache_mode(SSL_SESS_CACHE_OFF)``)."""
    pointer = _ssl_ctx(ctx)
    lib = _libssl()
    lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)
    if lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_GET_SESS_CACHE_MODE, 0, None) != _SSL_SESS_CACHE_OFF:
        raise TransportError("OpenSSL kept its TLS session cache on", fix=_FIX)


def session_cache_mode(ctx: ssl.SSLContext) -> int:
    """The context's ``SSL_SESS_CACHE_*`` mode (0 = off): what the policy set, read back."""
    return int(_libssl().SSL_CTX_ctrl(_ssl_ctx(ctx), _SSL_CTRL_GET_SESS_CACHE_MODE, 0, None))


@cache
def _chain_functions() -> ctypes.CDLL:
    lib = _libssl()
    lib.SSL_get_SSL_CTX.restype = ctypes.c_void_p
    lib.SSL_get_SSL_CTX.argtypes = [ctypes.c_void_p]
    lib.SSL_get0_verified_chain.restype = ctypes.c_void_p
    lib.SSL_get0_verified_chain.argtypes = [ctypes.c_void_p]
    lib.OPENSSL_sk_num.restype = ctypes.c_int
    lib.OPENSSL_sk_num.argtypes = [ctypes.c_void_p]
    lib.OPENSSL_sk_value.restype = ctypes.c_void_p
    lib.OPENSSL_sk_value.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.i2d_X509.restype = ctypes.c_int
    lib.i2d_X509.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


def presented_certificate(ssl_object: ssl.SSLObject) -> bytes | None:
    """The DER certificate the peer presented, also when its verification failed; None if unknown.

    ``getpeercert`` answers only after a successful handshake (and CPython 3.11 has no
    ``get_unverified_chain``), but the master's log must name the certificate it refused. OpenSSL
    keeps the chain it tried to build, leaf first, whether or not it verified
    (``SSL_get0_verified_chain``). The ``SSL *`` is the second field of CPython's ``PySSLSocket``
    (after the socket weakref); it is used only if the third field is this object's context and
    OpenSSL agrees that the ``SSL *`` belongs to that context. For a log line only: any doubt
    gives None, never an error.
    """
    inner = getattr(ssl_object, "_sslobj", None)
    word = ctypes.sizeof(ctypes.c_void_p)
    if inner is None or sys.implementation.name != "cpython":
        return None
    if type(inner).__basicsize__ < object.__basicsize__ + 3 * word:
        return None
    try:
        context = ssl_object.context
        base = id(inner) + object.__basicsize__
        pointer = ctypes.c_void_p.from_address(base + word).value
        if not pointer or ctypes.c_void_p.from_address(base + 2 * word).value != id(context):
            return None
        lib = _chain_functions()
        if lib.SSL_get_SSL_CTX(pointer) != _ssl_ctx(context):
            return None
        chain = lib.SSL_get0_verified_chain(pointer)
        if not chain or lib.OPENSSL_sk_num(chain) < 1:
            return None
        leaf = lib.OPENSSL_sk_value(chain, 0)
        size = lib.i2d_X509(leaf, None)
        if size <= 0:
            return None
        buffer = ctypes.create_string_buffer(size)
        cursor = ctypes.c_char_p(ctypes.addressof(buffer))
        if lib.i2d_X509(leaf, ctypes.byref(cursor)) != size:
            return None
        return buffer.raw
    except (TransportError, AttributeError, OSError, ValueError):
        return None
