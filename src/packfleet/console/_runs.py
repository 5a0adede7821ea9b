"""New execution, its dry run, and re-running an execution from its page.

The form is built from the deployed manifest (sensitive parameters are password fields, never
filled in from a default), and the run goes through the master's own ``run_package``: the same
parameter checks and wake-up as ``packfleet run``. A dry run changes nothing: it checks the
parameters and says which workers could take the execution now, and why each other one cannot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from packfleet.catalog import WorkerRecord
from packfleet.console._pages import _execution_id
from packfleet.console._views import ONLINE_WINDOW, WorkerView, worker_view
from packfleet.console._web import ConsoleRefusal, fleet_of, form_text, render, require, see_other
from packfleet.errors import PackfleetError
from packfleet.packages import ParameterSpec, Project, resolve_parameters

log = logging.getLogger("packfleet.console")

#: Up to this many workers the form has a checkbox each; a larger fleet gets a text box of names.
CHECKBOXES = 100


@dataclass(frozen=True)
class Verdict:
    """Whether one worker could take the execution now, and if not, every reason why."""

    view: WorkerView
    reasons: tuple[str, ...]

    @property
    def could(self) -> bool:
        return not self.reasons


def dry_run(views: list[WorkerView], allowed: tuple[str, ...]) -> list[Verdict]:
    """Each worker against what the catalog's lease asks: enabled, online, allowed, below MaxTaskCount."""
    verdicts = []
    for v in views:
        reasons = []
        if not v.record.is_enabled:
            reasons.append("disabled")
        if not v.online:
            reasons.append(
                "offline (no heartbeat for over 3 minutes)"
                if v.record.last_online_time
                else "offline (never connected)"
            )
        if allowed and v.record.agent_id not in allowed:
            reasons.append("not in the allowed list")
        if v.max_tasks and v.running >= v.max_tasks:
            reasons.append(f"MaxTaskCount reached ({v.running} of {v.max_tasks} running)")
        verdicts.append(Verdict(v, tuple(reasons)))
    verdicts.sort(key=lambda d: (not d.could, d.view.name.casefold()))
    return verdicts


@dataclass(frozen=True)
class Choice:
    """A worker in the form's Allowed workers list."""

    agent_id: str
    name: str
    state: str


def _state(enabled: bool, online: bool) -> str:
    return f"{'online' if online else 'offline'}, {'enabled' if enabled else 'disabled'}"


def _named(text: str, workers: list[WorkerRecord]) -> tuple[str, ...]:
    """Agent ids of the workers named in ``text`` (names or agent ids, by line or comma): the form
    of a fleet too large for a checkbox each. A name must be that of exactly one worker."""
    by_name: dict[str, list[str]] = {}
    for w in workers:
        by_name.setdefault(w.display_name, []).append(w.agent_id)
    ids = {w.agent_id for w in workers}
    found = []
    for ref in (part.strip() for part in text.replace(",", "\n").splitlines()):
        if not ref:
            continue
        if ref.lower() in ids:
            found.append(ref.lower())
        elif len(by_name.get(ref, [])) == 1:
            found.append(by_name[ref][0])
        elif ref in by_name:
            raise ConsoleRefusal(400, f"{len(by_name[ref])} workers are named {ref!r}", "name it by agent id")
        else:
            raise ConsoleRefusal(
                400, f"no worker has the name or agent id {ref!r}", "correct the list of allowed workers"
            )
    return tuple(found)


async def _targets(request: web.Request) -> list[str]:
    """Every runnable ``folder/project/package`` of the newest deployed versions."""
    fleet = fleet_of(request)
    targets = []
    for version in await fleet.db(fleet.catalog.list_projects):
        project = Project.from_dict(version.manifest)
        targets += [f"{version.folder}/{project.name}/{name}" for name in sorted(project.packages)]
    return targets


async def _specs(request: web.Request, target: str) -> tuple[str, str, str, list[ParameterSpec]]:
    parts = target.split("/")
    if len(parts) != 3 or not all(parts):
        raise ConsoleRefusal(400, f"{target!r} is not FOLDER/PROJECT/PACKAGE", "pick a package in the list")
    folder, project, package = parts
    fleet = fleet_of(request)
    version = await fleet.db(fleet.catalog.get_project_version, folder, project)
    manifest = Project.from_dict(version.manifest)
    if package not in manifest.packages:
        raise ConsoleRefusal(
            400, f"project {folder}/{project} has no package {package!r}", "pick a package in the list"
        )
    # Every parameter the package sees: the project's, then its own (the manifest's rule).
    specs = {**manifest.parameters, **manifest.packages[package].parameters}
    return folder, project, package, list(specs.values())


async def _page(
    request: web.Request,
    target: str,
    *,
    given: dict[str, str],
    allowed: tuple[str, ...],
    verdicts: list[Verdict] | None = None,
    problem: str = "",
) -> web.Response:
    fleet = fleet_of(request)
    specs = (await _specs(request, target))[3] if target else []
    now = fleet.now()
    # The light list (no certificates, no machine facts): a fleet of thousands stays quick.
    workers = [
        Choice(agent_id, name or agent_id, _state(enabled, seen is not None and now - seen <= ONLINE_WINDOW))
        for agent_id, name, enabled, seen in await fleet.db(fleet.catalog.worker_names)
    ]
    workers.sort(key=lambda c: c.name.casefold())
    # A checkbox per worker up to CHECKBOXES; a larger fleet names its allowed workers in a text box.
    named = len(workers) > CHECKBOXES
    if named:
        workers = [c for c in workers if c.agent_id in allowed]
    return render(
        request,
        "execution_new.html",
        title="New execution",
        targets=await _targets(request),
        target=target,
        specs=specs,
        given=given,
        workers=workers,
        named=named,
        allowed=allowed,
        verdicts=verdicts,
        problem=problem,
    )


async def new_page(request: web.Request) -> web.StreamResponse:
    require(request, "operator", "Starting an execution")
    return await _page(request, request.query.get("target", "").strip(), given={}, allowed=())


async def new_run(request: web.Request) -> web.StreamResponse:
    """Run, or dry-run (``action=dry-run``): the form names the package, parameters and workers."""
    viewer = require(request, "operator", "Starting an execution")
    form = await request.post()
    target = form_text(form, "target", limit=600)
    folder, project, package, specs = await _specs(request, target)
    # An empty field keeps the default; a sensitive one is never sent back filled in.
    given = {s.name: form_text(form, f"p.{s.name}", limit=10_000) for s in specs}
    given = {name: value for name, value in given.items() if value}
    fleet = fleet_of(request)
    known = {w.agent_id: w for w in await fleet.db(fleet.catalog.list_workers)}
    allowed = tuple(str(w) for w in form.getall("worker", []) if isinstance(w, str))
    unknown = [w for w in allowed if w not in known]
    if unknown:
        raise ConsoleRefusal(
            400, f"no worker has agent id {unknown[0]}", "reload the page and pick workers again"
        )
    allowed += _named(form_text(form, "workers", limit=100_000), list(known.values()))
    allowed = tuple(dict.fromkeys(allowed))
    shown = {s.name: ("" if s.sensitive else given.get(s.name, "")) for s in specs}
    if form.get("action") == "dry-run":
        problem = ""
        try:
            version = await fleet.db(fleet.catalog.get_project_version, folder, project)
            resolve_parameters(Project.from_dict(version.manifest), package, given)
        except PackfleetError as exc:
            problem = exc.message
        views = [worker_view(w, fleet.now()) for w in known.values()]
        return await _page(
            request, target, given=shown, allowed=allowed, verdicts=dry_run(views, allowed), problem=problem
        )
    try:
        record = await fleet.run_package(
            folder, project, package, parameters=dict(given), workers=allowed, actor=viewer.actor
        )
    except PackfleetError as exc:
        return await _page(request, target, given=shown, allowed=allowed, problem=exc.message)
    await _audit(request, viewer.actor, record.execution_id, target, None)
    log.info("console: %s started execution %d", viewer.name, record.execution_id)
    return see_other(f"/executions/{record.execution_id}?done=started")


async def _audit(
    request: web.Request, actor: str, execution_id: int, package: str, rerun_of: int | None
) -> None:
    # The catalog records the caller on the execution; the audit log gets the console's own row, so
    # "what did console:otto do" is answered in one place. Parameter values stay out of it.
    fleet = fleet_of(request)
    details: dict[str, object] = {"package": package} | ({"rerun_of": rerun_of} if rerun_of else {})
    await fleet.db(fleet.catalog.audit, actor, "execution.create", str(execution_id), details)


async def rerun(request: web.Request) -> web.StreamResponse:
    """The same package with the same parameters and allowed workers, as a new execution."""
    viewer = require(request, "operator", "Re-running an execution")
    fleet = fleet_of(request)
    old, record = await fleet.rerun_execution(_execution_id(request), actor=viewer.actor)
    target = f"{old.folder}/{old.project}/{old.package}"
    await _audit(request, viewer.actor, record.execution_id, target, old.execution_id)
    log.info("console: %s re-ran execution %d as %d", viewer.name, old.execution_id, record.execution_id)
    return see_other(f"/executions/{record.execution_id}?done=started")
