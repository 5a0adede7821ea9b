"""Wire schemas and route paths: all that :mod:`packfleet.master` and :mod:`packfleet.worker` share.

>>> msg = decode(LeaseRequest, {"agent_id": "a", "capacity": 2, "wait_seconds": 20, "lease_seconds": 60})
>>> encode(msg)["capacity"]
2
"""

from packfleet.protocol import _routes as routes
from packfleet.protocol._codec import decode, encode
from packfleet.protocol._messages import (
    CertificateRenewal,
    CertificateRenewalReply,
    CertificateRetirement,
    CertificateRetirementReply,
    CompletionBatch,
    CompletionReply,
    CompletionReport,
    CompletionResult,
    EventAck,
    EventBatch,
    EventMessage,
    EventSource,
    Heartbeat,
    HeartbeatReply,
    JoinChallenge,
    JoinReply,
    JoinRequest,
    LeaseRef,
    LeaseReply,
    LeaseRequest,
    Outcome,
    TaskAssignment,
    TaskHeartbeat,
    TaskHeartbeatReply,
    WorkerState,
    renewal_proof_message,
)
from packfleet.protocol._tokens import (
    JoinToken,
    hash_secret,
    join_proof_message,
    new_join_token,
    parse_join_token,
    secret_matches,
)

__all__ = [
    "CertificateRenewal",
    "CertificateRenewalReply",
    "CertificateRetirement",
    "CertificateRetirementReply",
    "CompletionBatch",
    "CompletionReply",
    "CompletionReport",
    "CompletionResult",
    "EventAck",
    "EventBatch",
    "EventMessage",
    "EventSource",
    "Heartbeat",
    "HeartbeatReply",
    "JoinChallenge",
    "JoinReply",
    "JoinRequest",
    "JoinToken",
    "LeaseRef",
    "LeaseReply",
    "LeaseRequest",
    "Outcome",
    "TaskAssignment",
    "TaskHeartbeat",
    "TaskHeartbeatReply",
    "WorkerState",
    "decode",
    "encode",
    "hash_secret",
    "join_proof_message",
    "new_join_token",
    "parse_join_token",
    "renewal_proof_message",
    "routes",
    "secret_matches",
]
