"""A master certificate rotation from the Certificates page: start, follow, switch, finish, abort.

The steps are the master's own (``packfleet manager rotate master-cert`` drives the same object):
**start** makes the next certificate and announces it to the workers in their heartbeat replies;
once every online worker accepts it, **switch** makes the master serve it; **finish** retires the
old one; **abort** gives up a rotation that has not switched. Each is an admin's POST with the
session's CSRF token, audited under ``console:<user>`` by the rotation itself. The progress section
(``/certificates/rotation``) is plain HTML; the page's script fetches it again every two seconds
while a rotation is under way, so the workers are seen to follow without a reload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from packfleet.console._inventory import inventory_of
from packfleet.console._web import ConsoleRefusal, fleet_of, form_text, render, require, see_other

log = logging.getLogger("packfleet.console")

#: The rotation section lists at most this many workers (those still behind first).
SHOWN_WORKERS = 200
STEPS = ("start", "switch", "finish", "abort")
_DONE = {"start": "started", "switch": "switched", "finish": "finished", "abort": "aborted"}


@dataclass(frozen=True)
class RotationView:
    """The rotation under way as the page shows it."""

    phase: str
    old: str
    new: str
    serving: str
    started_at: str
    switched_at: str
    online: int
    accepted: int
    promoted: int
    #: Online workers that do not accept the new certificate yet: a switch now would cut them off.
    waiting: int
    rows: list[dict[str, Any]]
    more: int
    manual_steps: list[str]

    @property
    def can_switch(self) -> bool:
        return self.phase == "announced" and self.waiting == 0


def rotation_view(status: dict[str, Any] | None) -> RotationView | None:
    """The master's rotation status (None: no rotation) for the template."""
    if status is None or status.get("phase") in (None, "none"):
        return None
    workers = list(status.get("workers", []))
    online = [w for w in workers if w["online"]]
    switched = status["phase"] == "switched"
    for w in workers:
        w["step"] = (
            "pins only the new certificate"
            if w["promoted"]
            else "accepts the new certificate"
            if w["confirmed"]
            else "not heard from since the rotation started"
            if not w["accepts"]
            else "does not accept the new certificate yet"
        )
        w["done"] = w["promoted"] if switched else w["confirmed"]
    # Behind first (online before offline), then by name: who holds the rotation up is at the top.
    workers.sort(key=lambda w: (w["done"], not w["online"], (w["display_name"] or "").casefold()))
    return RotationView(
        phase=status["phase"],
        old=status["old"] or "",
        new=status["new"] or "",
        serving=status["serving"] or "",
        started_at=(status.get("started_at") or "")[:19].replace("T", " "),
        switched_at=(status.get("switched_at") or "")[:19].replace("T", " "),
        online=len(online),
        accepted=sum(1 for w in online if w["confirmed"]),
        promoted=sum(1 for w in online if w["promoted"]),
        waiting=sum(1 for w in online if not w["confirmed"]),
        rows=workers[:SHOWN_WORKERS],
        more=max(0, len(workers) - SHOWN_WORKERS),
        manual_steps=list(status.get("manual_steps", [])),
    )


async def rotation_page(request: web.Request) -> web.StreamResponse:
    """The rotation section alone: a page of its own, and what the script fetches to follow it."""
    fleet = fleet_of(request)
    return render(
        request,
        "rotation.html",
        title="Master certificate rotation",
        rotation=rotation_view(await fleet.rotation_status()),
        done=request.query.get("done", ""),
    )


async def rotate(request: web.Request) -> web.StreamResponse:
    """One rotation step, named by the form's ``step`` button."""
    viewer = require(request, "admin", "Rotating the master certificate")
    form = await request.post()
    step = form_text(form, "step", limit=16)
    if step not in STEPS:
        raise ConsoleRefusal(400, f"rotation step {step!r} is not one of {', '.join(STEPS)}")
    fleet = fleet_of(request)
    try:
        await fleet.rotate_master_certificate(step, actor=viewer.actor, force=form.get("force") == "on")
    finally:
        # A step changes the Root store and perhaps the served certificate, even when it then fails.
        inventory_of(request).invalidate()
    log.info("console: %s: master certificate rotation step %s", viewer.name, step)
    return see_other(f"/certificates?done={_DONE[step]}#rotation")
