"""The console's worker management: drain, edit description and tags, and the Connect worker wizard.

Each change goes through the master's own functions (the ``Fleet`` calls), so the catalog, the
Root store, the principal cache and the long-polls change exactly as the admin API changes them,
and the audit log names ``console:<user>``.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from aiohttp import web

from packfleet.catalog import ExecutionStatus
from packfleet.console._views import when
from packfleet.console._web import ConsoleRefusal, fleet_of, form_text, render, require, see_other
from packfleet.errors import PackfleetError
from packfleet.pki import Credential

log = logging.getLogger("packfleet.console")

#: A .cer file (PEM or DER) is a few KiB; the console's body limit is 64 KiB.
MAX_CERTIFICATE = 32 * 1024
#: The wizard's join token admits one worker and lives one hour, ``manager token create``'s default.
TOKEN_TTL = 3600.0


async def running_tasks(request: web.Request, agent_id: str) -> int:
    """Executions running (or stopping) on worker ``agent_id``, from the catalog."""
    fleet = fleet_of(request)
    total = 0
    for status in (ExecutionStatus.RUNNING, ExecutionStatus.STOPPING):
        found = await fleet.db(fleet.catalog.list_executions, limit=10_000, status=status, agent_id=agent_id)
        total += len(found)
    return total


async def drain_worker(request: web.Request) -> web.StreamResponse:
    """Disable the worker (no new task) and follow its running tasks on its page until none is left."""
    viewer = require(request, "operator", "Draining a worker")
    form = await request.post()
    reason = form_text(form, "reason", limit=480) or "no reason given"
    fleet = fleet_of(request)
    found = await fleet.db(fleet.catalog.get_worker, request.match_info["agent_id"])
    await fleet.set_worker_enabled(found.agent_id, False, actor=viewer.actor, reason=f"drain: {reason}")
    running = await running_tasks(request, found.agent_id)
    log.info("console: %s drains worker %s (%d running): %s", viewer.name, found.agent_id, running, reason)
    # The count at the start rides in the address: the page's progress needs no server-side state.
    return see_other(f"/workers/{urllib.parse.quote(found.agent_id, safe='')}?drain={running}")


async def edit_worker(request: web.Request) -> web.StreamResponse:
    viewer = require(request, "operator", "Editing a worker")
    form = await request.post()
    fleet = fleet_of(request)
    found = await fleet.db(fleet.catalog.get_worker, request.match_info["agent_id"])
    await fleet.update_worker(
        found.agent_id,
        actor=viewer.actor,
        description=form_text(form, "description", limit=1000),
        tags=form_text(form, "tags", limit=1000),
    )
    log.info("console: %s edited worker %s", viewer.name, found.agent_id)
    return see_other(f"/workers/{urllib.parse.quote(found.agent_id, safe='')}?done=saved")


# --- Connect worker wizard ---------------------------------------------------------------------


async def connect_page(request: web.Request) -> web.StreamResponse:
    """Step one: how the worker is to be connected."""
    require(request, "admin", "Connecting a worker")
    return render(request, "connect.html", title="Connect worker")


async def _certificate_from(request: web.Request, form: Any) -> Credential:
    fleet = fleet_of(request)
    method = form.get("method")
    try:
        if method == "upload":
            upload = form.get("certificate")
            if not isinstance(upload, web.FileField):
                raise ConsoleRefusal(
                    400, "no certificate file was uploaded", "choose the worker's .cer file and press Next"
                )
            data = upload.file.read(MAX_CERTIFICATE + 1)
            if len(data) > MAX_CERTIFICATE:
                raise ConsoleRefusal(400, f"the uploaded file is over {MAX_CERTIFICATE} bytes: not a .cer")
        elif method == "thumbprint":
            thumbprint = form_text(form, "thumbprint", limit=100)
            if not thumbprint:
                raise ConsoleRefusal(400, "no thumbprint was given", "paste the worker's thumbprint")
            data = await fleet.stored_certificate(thumbprint)
        elif method == "pem":
            data = form_text(form, "cert_pem", limit=MAX_CERTIFICATE).encode()
        else:
            raise ConsoleRefusal(
                400, f"unknown connection method {method!r}", "start again at /workers/connect"
            )
        return fleet.worker_certificate(data)
    except ConsoleRefusal:
        raise
    except PackfleetError as exc:
        raise ConsoleRefusal(400, f"the worker certificate cannot be used: {exc.message}", exc.fix) from None


def _choices(form: Any) -> tuple[str, bool]:
    return form_text(form, "display_name", limit=200), form.get("enable") == "on"


async def connect_review(request: web.Request) -> web.StreamResponse:
    """Step two: the actions that will be taken, and Confirm."""
    require(request, "admin", "Connecting a worker")
    form = await request.post()
    name, enable = _choices(form)
    if form.get("method") == "token":
        actions = [
            "Create a join token that admits one worker and expires in 1 hour.",
            "The worker that joins with it is trusted at once: its certificate goes into the "
            "master's Root store.",
            "It is registered "
            + ("enabled: it takes tasks at once." if enable else "disabled: enable it here."),
            "Only a hash of the token's secret is kept; the token is shown once, on the next page.",
        ]
        return render(
            request,
            "connect_review.html",
            title="Connect worker: review",
            actions=actions,
            method="token",
            cert_pem="",
            display_name=name,
            enable=enable,
        )
    cert = await _certificate_from(request, form)
    actions = [
        f"Use certificate {cert.thumbprint} (subject {cert.certificate.subject.rfc4514_string()}, "
        f"not after {when(cert.certificate.not_valid_after_utc)}): usable as a worker's client "
        "certificate.",
        "Install it into the master's Root store: the master trusts it at once, without a restart.",
        f"Record the worker{' as ' + name if name else ''}; it is registered under its AgentId "
        "when it first connects, "
        + ("enabled: it takes tasks at once." if enable else "disabled: enable it here afterwards."),
        "Write certificate.add to the audit log under your name.",
    ]
    return render(
        request,
        "connect_review.html",
        title="Connect worker: review",
        actions=actions,
        method="pem",
        cert_pem=cert.cert_pem().decode(),
        display_name=name,
        enable=enable,
    )


async def connect(request: web.Request) -> web.StreamResponse:
    """Step three: do it."""
    viewer = require(request, "admin", "Connecting a worker")
    form = await request.post()
    name, enable = _choices(form)
    fleet = fleet_of(request)
    if form.get("method") == "token":
        token = await fleet.create_join_token(actor=viewer.actor, ttl_seconds=TOKEN_TTL, enable=enable)
        log.info("console: %s created a join token", viewer.name)
        return render(
            request,
            "connect_done.html",
            title="Connect worker: run this on the worker",
            command=f"packfleet worker join {token['token']}",
            expires=when(token["expires_at"]),
            thumbprint="",
        )
    cert = await _certificate_from(request, form)
    thumbprint = await fleet.trust_worker(cert, actor=viewer.actor, display_name=name or None, enable=enable)
    log.info("console: %s connected worker certificate %s", viewer.name, thumbprint)
    return render(
        request,
        "connect_done.html",
        title="Connect worker: done",
        command="packfleet worker run",
        expires="",
        thumbprint=thumbprint,
    )


async def drain_progress(request: web.Request, agent_id: str, enabled: bool) -> dict[str, Any] | None:
    """What the worker page shows while ``?drain=N`` is in its address: N tasks at the start."""
    raw = request.query.get("drain", "")
    if not raw.isdigit() or enabled:
        return None
    started = int(raw)
    running = await running_tasks(request, agent_id)
    started = max(started, running)
    return {"started": started, "running": running, "finished": started - running}
