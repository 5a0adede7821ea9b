"""Route paths, shared so that a renamed route breaks both ends at import time, not at run time."""

from __future__ import annotations

API = "/api/v1"

HEALTH = f"{API}/health"
#: Prometheus scrapes /metrics by convention, outside the versioned API.
METRICS = "/metrics"
OPENAPI = f"{API}/openapi.json"
JOIN = f"{API}/join"

WORKER_HEARTBEAT = f"{API}/worker/heartbeat"
WORKER_LEASE = f"{API}/worker/lease"
WORKER_TASK_HEARTBEAT = f"{API}/worker/tasks/heartbeat"
WORKER_EVENTS = f"{API}/worker/events"
WORKER_COMPLETE = f"{API}/worker/tasks/complete"
#: Events and the completion reports they unblock, in one request (WORKER_EVENTS, then WORKER_COMPLETE
#: for masters that answer it 404).
WORKER_REPORT = f"{API}/worker/report"
WORKER_PROJECT = f"{API}/worker/projects/{{sha256}}"
WORKER_CERTIFICATE = f"{API}/worker/certificate"
WORKER_CERTIFICATE_RETIRE = f"{API}/worker/certificate/retire"
WORKER_SELF = f"{API}/worker/self"

ADMIN = f"{API}/admin"
ADMIN_WORKERS = f"{ADMIN}/workers"
ADMIN_WORKER = f"{ADMIN}/workers/{{ref}}"
ADMIN_WORKER_ENABLE = f"{ADMIN}/workers/{{ref}}/enable"
ADMIN_WORKER_DISABLE = f"{ADMIN}/workers/{{ref}}/disable"
ADMIN_CERTIFICATES = f"{ADMIN}/certificates"
ADMIN_CERTIFICATE_REVOKE = f"{ADMIN}/certificates/{{thumbprint}}/revoke"
ADMIN_PROJECTS = f"{ADMIN}/projects"
ADMIN_EXECUTIONS = f"{ADMIN}/executions"
ADMIN_EXECUTIONS_BULK = f"{ADMIN}/executions/bulk"
ADMIN_EXECUTION = f"{ADMIN}/executions/{{execution_id}}"
ADMIN_EXECUTION_EVENTS = f"{ADMIN}/executions/{{execution_id}}/events"
ADMIN_EXECUTION_CANCEL = f"{ADMIN}/executions/{{execution_id}}/cancel"
ADMIN_EXECUTION_PENDING = f"{ADMIN}/executions/{{execution_id}}/pending"
ADMIN_AUDIT = f"{ADMIN}/audit"
ADMIN_ROTATION_MASTER_CERT = f"{ADMIN}/rotation/master-cert"
ADMIN_TOKENS = f"{ADMIN}/tokens"
ADMIN_TOKEN_REVOKE = f"{ADMIN}/tokens/{{token_id}}/revoke"
ADMIN_WORKER_CONNECT = f"{ADMIN}/workers/{{ref}}/connect"
ADMIN_IDENTITIES = f"{ADMIN}/identities"
ADMIN_IDENTITY_REVOKE = f"{ADMIN}/identities/{{name}}/revoke"

PROBLEM_CONTENT_TYPE = "application/problem+json"
#: Every problem document the master writes has a ``type`` starting with this (RFC 9457 allows any
#: URI): how a client tells the master's own refusal from a proxy's error page.
PROBLEM_TYPE_PREFIX = "urn:packfleet:problem:"
