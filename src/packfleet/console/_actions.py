"""The console's changes: enable, disable and delete workers; stop executions.

Each is a POST with the session's CSRF token, checked against the user's role, made through the same
master functions as the admin API, and audited under ``console:<user>``.
"""

from __future__ import annotations

import logging
import urllib.parse

from aiohttp import web

from packfleet.console._pages import _execution_id
from packfleet.console._web import ConsoleRefusal, fleet_of, form_text, require, see_other

log = logging.getLogger("packfleet.console")


def _back(agent_id: str, done: str) -> web.Response:
    return see_other(f"/workers/{urllib.parse.quote(agent_id, safe='')}?done={done}")


async def enable_worker(request: web.Request) -> web.StreamResponse:
    viewer = require(request, "operator", "Enabling a worker")
    fleet = fleet_of(request)
    found = await fleet.db(fleet.catalog.get_worker, request.match_info["agent_id"])
    await fleet.set_worker_enabled(found.agent_id, True, actor=viewer.actor, reason=None)
    log.info("console: %s enabled worker %s", viewer.name, found.agent_id)
    return _back(found.agent_id, "enabled")


async def disable_worker(request: web.Request) -> web.StreamResponse:
    viewer = require(request, "operator", "Disabling a worker")
    form = await request.post()
    reason = form_text(form, "reason", limit=500)
    if not reason:
        raise ConsoleRefusal(
            400,
            "say why the worker is disabled: the reason goes into the audit log",
            "go back, fill in Reason and press Disable again",
        )
    fleet = fleet_of(request)
    found = await fleet.db(fleet.catalog.get_worker, request.match_info["agent_id"])
    await fleet.set_worker_enabled(found.agent_id, False, actor=viewer.actor, reason=reason)
    log.info("console: %s disabled worker %s: %s", viewer.name, found.agent_id, reason)
    return _back(found.agent_id, "disabled")


async def delete_worker(request: web.Request) -> web.StreamResponse:
    """Step two of deleting: the confirm page's form names the worker again."""
    viewer = require(request, "admin", "Deleting a worker")
    form = await request.post()
    fleet = fleet_of(request)
    found = await fleet.db(fleet.catalog.get_worker, request.match_info["agent_id"])
    if form_text(form, "confirm", limit=64) != found.agent_id:
        raise ConsoleRefusal(
            400,
            f"deleting worker {found.agent_id} needs the confirmation step",
            f"open /workers/{found.agent_id}/delete and press Delete worker",
        )
    await fleet.delete_worker(found.agent_id, actor=viewer.actor)
    log.info("console: %s deleted worker %s", viewer.name, found.agent_id)
    return see_other("/workers?done=deleted")


async def stop_execution(request: web.Request) -> web.StreamResponse:
    viewer = require(request, "operator", "Stopping an execution")
    fleet = fleet_of(request)
    execution_id = _execution_id(request)
    await fleet.cancel_execution(execution_id, actor=viewer.actor)
    log.info("console: %s stopped execution %d", viewer.name, execution_id)
    return see_other(f"/executions/{execution_id}?done=stopping")
