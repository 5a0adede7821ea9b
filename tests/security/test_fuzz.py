"""Fuzz every route of the master's OpenAPI document with schemathesis, over mutual TLS.

A throwaway master (a real process) takes schemathesis' whole set of checks: no 5xx, every answer
matches the document (status, content type, schema, ``Allow`` on a 405), schema-valid requests are
taken and schema-invalid ones refused, and the stateful phase chains the routes, destructive ones
(delete, revoke, disable, token revoke, certificate rotation) included. Once as the admin on every
route, once as the enabled worker on the worker routes.

``make test`` runs it with a few examples per route (``PACKFLEET_FUZZ_EXAMPLES``, default 10);
``make fuzz`` runs it with many more.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from security._fuzz_support import fuzz_target, run_schemathesis

EXAMPLES = int(os.environ.get("PACKFLEET_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("PACKFLEET_FUZZ_SEED", "1"))


@pytest.mark.e2e
def test_every_route_survives_schemathesis_with_every_check(tmp_path: Path) -> None:
    with fuzz_target(tmp_path) as target:
        runs = {
            "admin": run_schemathesis(
                target, target.admin, max_examples=EXAMPLES, seed=SEED, report=tmp_path / "admin"
            ),
            "worker": run_schemathesis(
                target,
                target.worker,
                max_examples=EXAMPLES,
                seed=SEED,
                report=tmp_path / "worker",
                include_path_regex="^/api/v1/worker/",
            ),
        }
        master_log = target.cluster.tail(target.cluster.master, 60)
    for name, done in runs.items():
        assert done.returncode == 0, (
            f"schemathesis as {name} found problems (exit {done.returncode}):\n{done.stdout[-12000:]}\n"
            f"{done.stderr[-2000:]}\nmaster log:\n{master_log}"
        )
        # Every selected operation was tried: all of the document as admin, the worker routes as the worker.
        selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", done.stdout)
        assert selected is not None, done.stdout[-3000:]
        assert selected[1] == selected[3], selected[0]
        if name == "admin":
            assert selected[1] == selected[2], "the admin run must select every operation"
