"""Wire schemas and route paths: all that :mod:`packfleet.master` and :mod:`packfleet.worker` share.

>>> msg = decode(LeaseRequest, {"agent_id": "a", "capacity": 2, "wait_seconds": 20, "lease_seconds": 60})
>>> encode(msg)["capacity"]
2
"""

from packfleet.protocol import _routes as routes
from packfleet.protocol._codec import decode, encode
from packfleet.protocol._messages import (
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
    LeaseRef,
    LeaseReply,
    LeaseRequest,
    Outcome,
    TaskAssignment,
    TaskHeartbeat,
    TaskHeartbeatReply,
    WorkerState,
)

__all__ = [
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
    "routes",
]
