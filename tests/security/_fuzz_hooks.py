"""Schemathesis hooks for the fuzz run (loaded through SCHEMATHESIS_HOOKS by ``run_schemathesis``).

They teach the generator the master's own formats, so that "valid" data is data the master takes:
``pem-certificate`` fields get real certificates, ``packfleet-endpoint`` an https URL, an
``application/zip`` body a real project archive. One body is left out: a master certificate
rotation ``switch`` would make the master serve a certificate the fuzzer does not pin, cutting the
run's own channel; switching is covered by the rotation tests (tests/master/test_rotation.py and
tests/e2e/test_rotation.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st

from packfleet.packages import build_archive
from packfleet.pki import create_self_signed

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "etl"
_CERTS = [create_self_signed([f"fuzz-worker-{n}", "127.0.0.9"]).cert_pem().decode() for n in range(3)]

schemathesis.openapi.format("pem-certificate", st.sampled_from(_CERTS))
schemathesis.openapi.format(
    "packfleet-endpoint", st.sampled_from(["", "https://127.0.0.1:8391", "https://master.example.com:443"])
)
_HOSTS = ["127.0.0.1", "localhost", "master.example.com", "::1", "*.example.com"]
schemathesis.openapi.format("packfleet-host", st.sampled_from(_HOSTS))
schemathesis.openapi.media_type("application/zip", st.just(build_archive(_EXAMPLE)))


@schemathesis.hook("filter_body").apply_to(path="/api/v1/admin/rotation/master-cert", method="POST")
def no_switch(ctx: schemathesis.HookContext, body: Any) -> bool:
    return not (isinstance(body, dict) and body.get("action") == "switch")


@schemathesis.hook("map_body").apply_to(path_regex="^/api/v1/worker/")
def as_the_worker(ctx: schemathesis.HookContext, body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    # The worker run presents worker1's certificate: speak for its agent id (when the body names
    # one), so the requests reach the handlers instead of stopping at "may not act for agent".
    agent = os.environ.get("PACKFLEET_FUZZ_AGENT_ID")
    if agent and "agent_id" in body:
        body = {**body, "agent_id": agent}
    # A lease is held open up to 30 s when no task is ready; the run keeps each wait short so its
    # budget goes to many requests (the long-poll itself is tested in tests/master).
    if isinstance(body.get("wait_seconds"), int | float):
        body = {**body, "wait_seconds": min(body["wait_seconds"], 0.2)}
    return body


@schemathesis.hook("map_query").apply_to(path_regex="/events$")
def short_follow(ctx: schemathesis.HookContext, query: Any) -> Any:
    if isinstance(query, dict) and "wait" in query:
        return {**query, "wait": 0}
    return query


@schemathesis.hook("map_query").apply_to(path="/api/v1/admin/executions", method="POST")
def short_run_wait(ctx: schemathesis.HookContext, query: Any) -> Any:
    # No worker runs the fuzz run's executions: a run with wait would be held for all of it. Only
    # numbers are shortened, so a wait that is not one still reaches the master and is refused.
    if isinstance(query, dict) and isinstance(query.get("wait"), int | float):
        return {**query, "wait": 0}
    return query
