"""The messages of the admin routes (``/api/v1/admin/``): what a manager sends and what it gets back.

The master's answers have these shapes (the contract tests decode each one strictly), the manager
client decodes them (:class:`packfleet.manager.ManagerClient`), the CLI and the console render them. Times
are ISO 8601 text with offset and status codes SSIS numbers, as on the wire; the codes' names come
from :mod:`packfleet.protocol._codes`.

An answer is decoded leniently where a request is decoded strictly: a newer master may add fields,
and an older client must still read the ones it knows. The JSON as received stays with the message
(:meth:`AdminAnswer.wire`), so ``--json`` prints every field the master sent, and ``answer["key"]``
reads it as the earlier dict answers did.

>>> w = Worker.from_wire({"agent_id": "a", "display_name": "w1", "is_enabled": True, "state": "online",
...                       "online": True, "certificates": [], "extra": 1})
>>> (w.display_name, w.online, w["extra"])
('w1', True, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from packfleet.errors import InvalidValue, ProtocolError
from packfleet.protocol._codec import decode, encode
from packfleet.protocol._codes import ExecutionStatus, Liveness, TaskStatus

A = TypeVar("A", bound="AdminAnswer")

#: OpenAPI format of a certificate field: the master takes PEM (or base64 DER) and answers 400
#: for anything it cannot read as a certificate.
PEM_CERTIFICATE = {"schema": {"format": "pem-certificate"}}
#: How often an execution whose worker vanished may be requeued: plenty for flaky machines, and a
#: bound the database column and the OpenAPI document both hold.
MAX_RETRY_COUNT = 1000
#: Longest idempotency key a client may send (the catalog column's size).
MAX_IDEMPOTENCY_KEY = 128
#: Most events in one answer of the events route (unless its ``limit`` asks for fewer), and of a
#: run request with ``wait``: a page this full may have more behind it.
EVENTS_PAGE = 1000
#: How long a join token may live (kubeadm's live 24 h by default; ours one hour, at most a year),
#: and how many workers one may admit.
MAX_TOKEN_TTL = timedelta(days=365)
MAX_TOKEN_USES = 10_000
#: The roles an identity may hold (a worker certificate is never an identity).
IDENTITY_ROLES = ("admin", "executor", "viewer")
#: An identity's name: at most the catalog column's 256 characters, something besides spaces, and
#: neither control characters (it is logged) nor "/" (it is a path segment of the revoke route).
MAX_IDENTITY_NAME = 256
IDENTITY_NAME_PATTERN = r"^[^\x00-\x1f\x7f/]*[^\s\x00-\x1f\x7f/][^\x00-\x1f\x7f/]*$"


# --- requests (decoded strictly by the master) ---------------------------------------------------


@dataclass(frozen=True)
class AddWorker:
    """Trust a worker certificate: install it in the master's Root store and record it (pending)."""

    cert_pem: str = field(metadata=PEM_CERTIFICATE)
    display_name: str | None = None
    enable: bool = False
    #: An existing worker (agent id, thumbprint or name) this certificate is for: bound at once.
    worker: str = ""


@dataclass(frozen=True)
class UpdateWorker:
    """What an administrator may change on a worker; absent fields stay as they are."""

    description: str | None = None
    tags: str | None = None
    display_name: str | None = None


@dataclass(frozen=True)
class RunPackage:
    """Start one execution (SSIS ``create_execution`` + ``add_execution_worker`` + ``start_execution``)."""

    folder: str
    project: str
    package: str
    parameters: dict[str, str] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)
    retry_count: int = field(default=0, metadata={"schema": {"minimum": 0, "maximum": MAX_RETRY_COUNT}})
    #: Chosen by the client (``run`` makes one per submit): the same key again returns the same
    #: execution, so a submit whose answer was lost can be sent again safely.
    idempotency_key: str = ""

    def check(self) -> None:
        """Raise :class:`InvalidValue` for a retry count or an idempotency key out of bounds."""
        if not 0 <= self.retry_count <= MAX_RETRY_COUNT:
            raise InvalidValue(f"retry_count must be 0..{MAX_RETRY_COUNT}, not {self.retry_count}")
        if len(self.idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidValue(
                f"idempotency_key has {len(self.idempotency_key)} characters; at most {MAX_IDEMPOTENCY_KEY}"
            )


@dataclass(frozen=True)
class CreateToken:
    """Make a join token; ``worker`` (a reference) binds it to an existing worker's AgentId."""

    ttl_seconds: float = field(
        default=3600.0, metadata={"schema": {"minimum": 1, "maximum": MAX_TOKEN_TTL.total_seconds()}}
    )
    uses: int = field(default=1, metadata={"schema": {"minimum": 1, "maximum": MAX_TOKEN_USES}})
    enable: bool = False
    #: Empty (MasterAddress) or an https URL; the master checks the host and port themselves.
    endpoint: str = field(default="", metadata={"schema": {"format": "packfleet-endpoint"}})
    worker: str = ""

    def check(self) -> None:
        """Raise :class:`InvalidValue` for a lifetime or a number of uses out of bounds: the one rule
        the master and ``manager token create`` apply."""
        # Range-check the number before timedelta sees it: 1e300 or inf would overflow it.
        if not 0 < self.ttl_seconds <= MAX_TOKEN_TTL.total_seconds():  # NaN fails every comparison
            raise InvalidValue(
                f"ttl_seconds must be more than 0 and at most {MAX_TOKEN_TTL.total_seconds():.0f} "
                f"({MAX_TOKEN_TTL}), not {self.ttl_seconds}",
                fix="packfleet manager token create --ttl 1h",
            )
        if not 1 <= self.uses <= MAX_TOKEN_USES:
            raise InvalidValue(f"uses must be 1..{MAX_TOKEN_USES}, not {self.uses}")


def identity_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an identity, or None: the one rule the master and the CLI apply.

    The same test as the OpenAPI document's pattern (Python's re, as a fuzzer's validator uses), so
    the master takes exactly the names the document promises.
    """
    if len(name) > MAX_IDENTITY_NAME or not re.search(IDENTITY_NAME_PATTERN, name):
        return (
            f"name {name!r} is not a usable identity name: 1 to {MAX_IDENTITY_NAME} characters, not only "
            "spaces, without control characters or '/'"
        )
    return None


@dataclass(frozen=True)
class CreateIdentity:
    """Pin a client certificate (PEM, no key) to a new principal ``name`` with ``role``."""

    name: str = field(metadata={"schema": {"maxLength": MAX_IDENTITY_NAME, "pattern": IDENTITY_NAME_PATTERN}})
    role: str = field(metadata={"schema": {"enum": list(IDENTITY_ROLES)}})
    cert_pem: str = field(metadata=PEM_CERTIFICATE)

    def check(self) -> None:
        """Raise :class:`InvalidValue` for a role or a name the master does not take (the certificate
        is the master's to judge, on its clock)."""
        if self.role not in IDENTITY_ROLES:
            raise InvalidValue(
                f"role {self.role!r} is not one of {', '.join(IDENTITY_ROLES)}",
                fix="packfleet manager identity create NAME --role viewer --out DIR",
            )
        problem = identity_name_problem(self.name)
        if problem is not None:
            raise InvalidValue(problem, fix="packfleet manager identity create alice --role viewer --out DIR")


# --- answers (decoded leniently by the manager) --------------------------------------------------


class AdminAnswer:
    """Base of the admin answers: lenient decoding, and the JSON as received kept beside the fields."""

    __slots__ = ()

    @classmethod
    def from_wire(cls: type[A], data: Any) -> A:
        """Decode ``data``: unknown fields are kept in :meth:`wire` only; a missing or mistyped
        known field is a :class:`ProtocolError` naming it."""
        message = decode(cls, _known(cls, data, cls.__name__), where=cls.__name__)
        object.__setattr__(message, "_wire", data)
        return message

    @classmethod
    def many(cls: type[A], data: Any) -> list[A]:
        if not isinstance(data, list):
            raise ProtocolError(f"{cls.__name__} list: expected a JSON array, got {type(data).__name__}")
        return [cls.from_wire(item) for item in data]

    def wire(self) -> dict[str, Any]:
        """The answer as the master sent it (every field, also those this version does not know)."""
        found = self.__dict__.get("_wire")
        if isinstance(found, dict):
            return found
        encoded: dict[str, Any] = encode(self)
        return encoded

    # Read-only mapping access to the wire form: scripts written against the dict answers of
    # earlier versions keep working while they move to the attributes.
    def __getitem__(self, key: str) -> Any:
        return self.wire()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.wire().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.wire()

    def keys(self) -> Iterator[str]:
        return iter(self.wire().keys())


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _nested(hint: Any) -> type | None:
    """The answer dataclass inside ``X``, ``X | None`` or ``list[X]``, if any."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType, list):
        for arg in get_args(hint):
            found = _nested(arg)
            if found is not None:
                return found
        return None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    return None


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, type | None], ...]:
    """Each field of ``cls`` and the answer dataclass inside it, if any: worked out once per class
    (walking the type hints for every field of every answer was most of a client's decode)."""
    hints = _hints(cls)
    return tuple((f.name, _nested(hints[f.name])) for f in dataclasses.fields(cls))


def _known(cls: type, data: Any, where: str) -> Any:
    """``data`` with only the fields ``cls`` declares, recursively (nested answers and lists of them)."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for name, inner in _fields(cls):
        if name not in data:
            continue
        value = data[name]
        if inner is not None and isinstance(value, list):
            value = [_known(inner, v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        elif inner is not None and isinstance(value, dict):
            value = _known(inner, value, f"{where}.{name}")
        out[name] = value
    return out


@dataclass(frozen=True)
class WorkerCertificate(AdminAnswer):
    """One certificate of a worker: ``status`` active, revoked or retired."""

    thumbprint: str
    status: str
    sha256: str | None = None
    not_after: str | None = None


@dataclass(frozen=True)
class Worker(AdminAnswer):
    """A worker agent (SSIS ``catalog.worker_agents``) with the master's verdict on its state.

    ``state`` and ``online`` are judged by the master on its own clock (see
    :data:`packfleet.protocol.ONLINE_WINDOW`), so every client shows the same.
    """

    agent_id: str
    display_name: str
    is_enabled: bool
    certificates: list[WorkerCertificate]
    state: Liveness = "never"
    online: bool = False
    #: Seconds since the last heartbeat when not online (None: online, or never seen).
    offline_seconds: float | None = None
    description: str = ""
    machine_name: str = ""
    tags: str = ""
    user_account: str = ""
    last_online_time: str | None = None
    machine_info: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    clock_skew_seconds: float | None = None


@dataclass(frozen=True)
class TrustedCertificate(AdminAnswer):
    """A certificate the master now trusts (``manager worker add``); ``agent_id`` None: pending."""

    thumbprint: str
    status: str
    agent_id: str | None = None
    display_name: str | None = None
    subject: str | None = None
    not_before: str | None = None
    not_after: str | None = None
    sha256: str | None = None
    enable_on_bind: bool = False
    created_at: str = ""


@dataclass(frozen=True)
class DeletedWorker(AdminAnswer):
    """What deleting a worker did: its certificates, and whether any left the Root store."""

    agent_id: str
    thumbprints: list[str]
    #: The thumbprints that left the master's Root store.
    removed_from_root: list[str]


@dataclass(frozen=True)
class Package(AdminAnswer):
    name: str
    kind: str
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProjectVersion(AdminAnswer):
    """One deployed version of a project."""

    id: int
    folder: str
    project: str
    version: int
    sha256: str
    size: int
    packages: list[Package] = field(default_factory=list)
    description: str = ""
    deployed_at: str = ""
    deployed_by: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task(AdminAnswer):
    """The task of an execution: who runs it, which attempt (SSIS Scale Out task status codes)."""

    task_id: int
    status: int
    attempt: int
    status_name: str = ""
    agent_id: str | None = None
    lease_expires_at: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    message: str | None = None

    @property
    def code(self) -> TaskStatus:
        return TaskStatus(self.status)


@dataclass(frozen=True)
class Execution(AdminAnswer):
    """An execution (SSIS ``catalog.executions``); sensitive parameters come masked."""

    execution_id: int
    folder: str
    project: str
    package: str
    status: int
    status_name: str = ""
    project_version_id: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)
    retry_count: int = 0
    created_by: str = ""
    created_at: str = ""
    started_at: str | None = None
    ended_at: str | None = None
    allowed_workers: list[str] = field(default_factory=list)
    task: Task | None = None
    idempotency_key: str | None = None

    @property
    def code(self) -> ExecutionStatus:
        """The status as the one enum every side uses."""
        return ExecutionStatus(self.status)

    @property
    def finished(self) -> bool:
        return self.code.finished


@dataclass(frozen=True)
class Event(AdminAnswer):
    """An event message of an execution (SSIS ``catalog.event_messages``)."""

    id: int
    execution_id: int
    message: str
    message_source: str = "system"
    message_type: int = 70
    message_type_name: str = ""
    message_time: str = ""
    received_at: str | None = None
    task_id: int = 0
    attempt: int = 0
    seq: int = 0


@dataclass(frozen=True)
class EventPage(AdminAnswer):
    """One answer of the events route (the events after ``after_id``), or of a run request with
    ``wait`` (its execution's first events): the execution too, and whether it ended."""

    execution: Execution
    events: list[Event]
    last_id: int
    finished: bool

    @property
    def complete(self) -> bool:
        """Whether a follower has every event: the execution had ended when these were read (one
        snapshot), and the page is not full (asked without ``limit``), so none are left behind."""
        return self.finished and len(self.events) < EVENTS_PAGE


@dataclass(frozen=True)
class AuditEntry(AdminAnswer):
    """One row of the audit log."""

    id: int
    time: str
    actor: str
    action: str
    target: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JoinTokenView(AdminAnswer):
    """A join token as ``token list`` shows it; ``token`` (the secret string) only in a create answer.

    ``status`` is usable, used, expired or revoked, judged by the master on its clock.
    """

    token_id: str
    status: str
    uses: int
    expires_at: str
    id: int = 0
    uses_left: int = 0
    enable: bool = False
    endpoint: str = ""
    created_by: str = ""
    created_at: str = ""
    revoked_at: str | None = None
    agent_id: str | None = None
    admitted: int = 0
    token: str = ""
    master_sha256: str = ""


@dataclass(frozen=True)
class ConnectedWorker(AdminAnswer):
    """A worker given a new certificate (``worker connect``): the ones it replaced are retired."""

    agent_id: str
    thumbprint: str
    display_name: str = ""
    enabled: bool = False
    retired: list[str] = field(default_factory=list)
    #: The retired thumbprints that left the master's Root store.
    removed_from_root: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CertificateEntry(AdminAnswer):
    """One fleet certificate and how long it has left; ``warning`` None, "30d", "7d" or "expired"."""

    role: str
    thumbprint: str
    not_after: str | None = None
    days_left: float | None = None
    warning: str | None = None
    status: str = ""
    name: str = ""
    sha256: str | None = None
    #: The worker's agent id, for a worker certificate.
    worker: str | None = None


@dataclass(frozen=True)
class Identity(AdminAnswer):
    """An admin, executor or viewer identity: a client certificate pinned to a role."""

    name: str
    role: str
    thumbprint: str | None = None
    created_at: str = ""
    not_after: str | None = None
    #: Only in the answer to a revocation.
    revoked: bool = False


@dataclass(frozen=True)
class PendingExplanation(AdminAnswer):
    """Why an execution is still pending: per worker that could run it, what stops it; ``ready``
    names workers that could lease it now."""

    execution_id: int
    status: str
    pending: bool
    reasons: list[str] = field(default_factory=list)
    ready: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RotationWorker(AdminAnswer):
    """A worker during a master certificate rotation: which master certificates it accepts."""

    agent_id: str
    display_name: str = ""
    enabled: bool = False
    #: The master's verdict, on its clock.
    online: bool = False
    last_online_time: str | None = None
    accepts: list[str] = field(default_factory=list)
    #: It accepts the new certificate beside the current one.
    confirmed: bool = False
    #: It pins only the new certificate.
    promoted: bool = False


@dataclass(frozen=True)
class RotationStatus(AdminAnswer):
    """The master certificate rotation (``phase`` "none" when there is none), and each worker's part.

    A step's answer says what it did too: ``resumed`` (start), ``removed_from_root`` (finish),
    ``aborted`` (abort: the thumbprint given up).
    """

    phase: str
    serving: str = ""
    old: str | None = None
    new: str | None = None
    started_at: str | None = None
    switched_at: str | None = None
    new_cert_pem: str = ""
    manual_steps: list[str] = field(default_factory=list)
    workers: list[RotationWorker] = field(default_factory=list)
    resumed: bool = False
    removed_from_root: bool = False
    aborted: str = ""


@dataclass(frozen=True)
class RefusedBind(AdminAnswer):
    """The master refused to bind the calling certificate to the AgentId it claimed: why, and the
    command that confirms the binding."""

    thumbprint: str
    agent_id: str
    detail: str
    fix: str


@dataclass(frozen=True)
class Health(AdminAnswer):
    """Liveness (``GET /api/v1/health``, open to anyone): the master's version and its UTC time, by
    which ``doctor`` on a worker measures clock skew. ``refused_bind`` only for a certificate bound
    to nobody whose binding the master refused."""

    status: str
    version: str
    time: str
    refused_bind: RefusedBind | None = None

    def wire(self) -> dict[str, Any]:
        """As the master sends it: ``refused_bind`` only when there is one."""
        found = self.__dict__.get("_wire")
        if isinstance(found, dict):
            return found
        encoded: dict[str, Any] = encode(self)
        if self.refused_bind is None:
            del encoded["refused_bind"]
        return encoded
