"""The one error tree of packfleet.

Every error packfleet raises on purpose derives from :class:`PackfleetError`, one base per layer.
Each carries a message a person can act on and, where there is one, ``fix``: the command that
mends it. The CLI prints both and exits with ``exit_code``.

    PackfleetError
    ├── SettingsError            config: settings files, bindings file, homes
    ├── PkiError                 pki: certificates, keys, stores
    │   ├── CertificateNotFound
    │   ├── CertificateExpired   a node's own certificate expired: it must be admitted again
    │   └── UnsupportedKey
    ├── TransportError           TLS and HTTP between nodes
    │   ├── TlsError
    │   ├── ProtocolError        a message does not match its schema
    │   ├── ApiError             the peer answered with a problem document
    │   └── JoinError            `worker join` cannot use its token or the master refused it
    │       └── PinMismatch      the master presented another certificate than the token pins
    ├── RemoteError              the master answered a manager's request with a 4xx problem document
    │   ├── Refused              403: the caller may not do this
    │   ├── BadRequest           400, 405, 413...: the request is malformed or names bad values
    │   ├── RemoteNotFound       404 (also a NotFound)
    │   └── RemoteConflict       409 (also a Conflict)
    ├── AgentFailed              a worker agent stopped because one of its loops failed
    ├── SecretsError             the master's secrets key file: missing, unreadable, too open
    ├── CatalogError             catalog: database, migrations, records
    │   ├── NotFound
    │   ├── Conflict             a change would break an invariant (a thumbprint bound twice...)
    │   │   └── VersionChanged   a submit checked against a version a deploy has since replaced
    │   ├── InvalidValue         a malformed value handed to the catalog (a bad request)
    │   └── CatalogUnavailable   the database cannot be reached right now (worth retrying)
    ├── PackageError             projects, archives, package runs
    │   ├── ArchiveError
    │   └── ExecutionFailed      run --wait saw the execution fail
    ├── ClusterError             a local cluster (demo, tests, bench) step failed
    ├── WaitTimeout              run --wait --timeout ran out before the execution ended
    └── UsageError               a command line that cannot be carried out

The exit codes are documented, one table, in docs/exit-codes.md.
"""

from __future__ import annotations


class PackfleetError(Exception):
    """Raised when packfleet refuses or fails to do something, with a reason a person can act on."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}\n  fix: {self.fix}"
        return self.message


class SettingsError(PackfleetError):
    """Raised when a settings or bindings file is missing, malformed, or names an unknown key or bad value."""

    exit_code = 3


class PkiError(PackfleetError):
    """Raised when a certificate, key or store cannot be created, read, written or used."""

    exit_code = 4


class CertificateNotFound(PkiError):
    """Raised when no certificate in a store matches the thumbprint or CN asked for."""


class CertificateExpired(PkiError):
    """Raised when a node's own certificate has expired: the master refuses it during the handshake,
    so it cannot be renewed over the old one and the node must be admitted again."""


class UnsupportedKey(PkiError):
    """Raised when a key is of a kind or size that OpenSSL 3 or packfleet's TLS policy will not use."""


class TransportError(PackfleetError):
    """Raised when a node cannot reach, authenticate or talk to another node."""

    exit_code = 5


class TlsError(TransportError):
    """Raised when a TLS handshake fails; the message says which side, which certificate, which check."""


class ProtocolError(TransportError):
    """Raised when a message on the wire does not match its schema (a bug or a version mismatch)."""


class _ProblemAnswer(PackfleetError):
    """What a problem document of the master says: its status, type URN, request and named members.

    A refusal (403) exits 4, another 4xx 2; a 5xx keeps the exit code of the class it is mixed into.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        problem_type: str = "about:blank",
        fix: str | None = None,
        method: str = "",
        path: str = "",
        thumbprint: str | None = None,
        worker: str | None = None,
    ) -> None:
        super().__init__(message, fix=fix)
        self.status = status
        self.problem_type = problem_type
        self.method = method
        self.path = path
        self.thumbprint = thumbprint
        self.worker = worker
        if status == 403:
            self.exit_code = 4
        elif 400 <= status < 500:
            self.exit_code = 2


class ApiError(_ProblemAnswer, TransportError):
    """Raised when the master answers with an RFC 9457 problem document.

    The message is the document's ``detail``; ``method`` and ``path`` say which request it answers.
    A refusal (403) exits like an authorization failure, another 4xx like a usage error (the request
    cannot be carried out as given), a 5xx like any transport failure.
    """


class JoinError(TransportError):
    """Raised when ``worker join`` cannot complete: a malformed join token, or a master that refused it."""


class PinMismatch(JoinError):
    """Raised when the master presents a certificate whose SHA-256 is not the one the join token pins."""


class RemoteError(_ProblemAnswer):
    """Raised by the manager client when the master answered with a well-formed 4xx problem document.

    The request reached the master and the master refused it: not a :class:`TransportError`, and
    sending it again changes nothing. ``status``, ``problem_type`` (the document's ``type`` URN),
    ``method`` and ``path`` say what was refused; ``thumbprint`` and ``worker`` repeat the
    document's members when it names them. A 5xx answer stays an :class:`ApiError` (the master
    failed or is unavailable, which a retry or another master may cure).

    Exit codes as :class:`ApiError`'s: 4 for a refusal (403), else 2.
    """


class Refused(RemoteError):
    """Raised when the master refused the caller (403): its role may not do this, or a join token,
    certificate or identity it names is revoked, expired or used up."""


class BadRequest(RemoteError):
    """Raised when the master refused a request as malformed: a bad value, a body too large, a method
    the route does not answer. ``message`` names the field."""


class AgentFailed(PackfleetError):
    """Raised when a worker agent stops because one of its loops failed; its service should restart it."""

    exit_code = 9


class SecretsError(PackfleetError):
    """Raised when the master's secrets key file is missing, malformed or too open, or a stored
    sensitive value names a key the file does not hold."""

    exit_code = 10


class CatalogError(PackfleetError):
    """Raised when the catalog database cannot be reached, migrated, or holds no such record."""

    exit_code = 6


class NotFound(CatalogError):
    """Raised when a catalog record (worker, execution, project, token...) does not exist."""


class Conflict(CatalogError):
    """Raised when a change would break an invariant, e.g. a thumbprint already bound to another worker."""


class VersionChanged(Conflict):
    """Raised when a submit checked against what the master took for a project's newest version
    finds a newer one deployed (by another master, or just now): the master checks it again."""


class InvalidValue(CatalogError):
    """Raised when a value handed to the catalog is malformed: an agent id that is not a UUID, an
    unknown event source or role, a negative retry count. The request is wrong, not the database,
    so the master answers 400 (a plain :class:`CatalogError` is 503: worth retrying)."""


class CatalogUnavailable(CatalogError):
    """Raised when the catalog database cannot be reached or dropped the connection: an outage,
    not a wrong request. The master counts these to renew leases when the database is back."""


class RemoteNotFound(RemoteError, NotFound):
    """Raised by the manager client when the master answered 404: the worker, execution, project,
    token... does not exist there. ``except NotFound`` catches it as it catches the catalog's own."""


class RemoteConflict(RemoteError, Conflict):
    """Raised by the manager client when the master answered 409: the change would break an invariant
    (a certificate bound to another worker, a rotation already under way)."""


class PackageError(PackfleetError):
    """Raised when a project is invalid, or a package cannot be loaded or run."""

    exit_code = 7


class ExecutionFailed(PackageError):
    """Raised by ``run --wait`` when the execution ended in any state but succeeded."""

    exit_code = 8


class ArchiveError(PackageError):
    """Raised when a project archive is corrupt, too large, or holds absolute paths, '..' or links."""


class ClusterError(PackfleetError):
    """Raised when a step of a local cluster (demo, end-to-end tests, benchmarks) fails, with its output."""


class WaitTimeout(PackfleetError):
    """Raised by ``run --wait --timeout`` when the time runs out first; the execution goes on."""

    exit_code = 10


class UsageError(PackfleetError):
    """Raised when a command line names things that cannot go together or do not exist."""

    exit_code = 2


__all__ = [
    "AgentFailed",
    "ApiError",
    "ArchiveError",
    "BadRequest",
    "CatalogError",
    "CatalogUnavailable",
    "CertificateExpired",
    "CertificateNotFound",
    "ClusterError",
    "Conflict",
    "ExecutionFailed",
    "JoinError",
    "NotFound",
    "PackageError",
    "PackfleetError",
    "PinMismatch",
    "PkiError",
    "ProtocolError",
    "Refused",
    "RemoteConflict",
    "RemoteError",
    "RemoteNotFound",
    "SettingsError",
    "TlsError",
    "TransportError",
    "UnsupportedKey",
    "UsageError",
    "WaitTimeout",
]
