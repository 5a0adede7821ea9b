"""A master with its console running in a thread of its own (Playwright's sync API refuses to run
inside an asyncio loop), console users of each role, and a small HTTPS client that keeps the cookie."""

from __future__ import annotations

import asyncio
import functools
import http.client
import logging
import re
import shutil
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from master.support import MasterHome, build_master_home, project_archive
from packfleet.catalog import EventInput, WorkerInfo
from packfleet.console import hash_password
from packfleet.master import MasterServer
from packfleet.master._services import RotationService
from packfleet.packages import inspect_archive
from packfleet.pki import create_self_signed
from packfleet.secretbox import open_values

P = ParamSpec("P")
#: The sources a worker's event messages come from (``packfleet.catalog``'s ``MessageSource``).
Source = Literal["stdout", "stderr", "log", "system"]
T = TypeVar("T")

PASSWORDS = {"ada": "admin-password-1", "otto": "operator-password-1", "vera": "viewer-password-1"}
ROLES = {"ada": "admin", "otto": "operator", "vera": "viewer"}


class RunningMaster:
    """A MasterServer (and so its console) on its own event loop in a background thread."""

    def __init__(self, mh: MasterHome, *, console_port: int | None = None) -> None:
        self.mh = mh
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="master-loop", daemon=True)
        self.server = MasterServer(
            mh.home, host="127.0.0.1", port=0, watch_interval=0, console_port=console_port
        )

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run(self.server.state.db(call, *args, **kwargs))

    def opened(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """An execution's stored parameters with the sealed (sensitive) ones opened by the master's key."""
        assert self.server.state.secrets is not None
        return open_values(self.server.state.secrets.get(), parameters)

    def rotation(self) -> RotationService:
        """The master certificate rotation, as the admin route and the console reach it."""
        assert self.server.services is not None, "the master is not started"
        return self.server.services.require_rotation()

    @property
    def catalog(self) -> Any:
        return self.server.state.catalog

    @property
    def url(self) -> str:
        url = self.server.console_url
        assert url is not None, "the console did not start"
        return url.rstrip("/")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self) -> None:
        self.thread.start()
        self.run(self.server.start())

    def stop(self) -> None:
        try:
            self.run(self.server.stop())
            self.run(asyncio.sleep(0.5))  # let TLS transports finish closing (else a ResourceWarning)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def add_worker(self, name: str = "worker1", *, enabled: bool = True, days: int = 365) -> str:
        """A worker as `manager worker add --enable` and its first heartbeat leave it."""
        agent_id = str(uuid.uuid4())
        pem = create_self_signed([name], days=days).cert_pem()
        cert = self.db(self.catalog.add_worker_certificate, pem, actor="admin", enable=enabled)
        info = WorkerInfo(
            agent_id, name, f"{name}.example", "packfleet", ("127.0.0.2",), 12.5, 2048.0, 0, "0.1.0"
        )
        self.db(self.catalog.worker_heartbeat, cert.thumbprint, info)
        return agent_id


@dataclass(frozen=True)
class Lease:
    agent_id: str
    execution_id: int
    task_id: int
    attempt: int


class Runs:
    """Executions made by hand through the catalog, as a worker's lease, events and report would."""

    def __init__(self, master: RunningMaster, root: Path) -> None:
        self.master = master
        archive = project_archive(root)
        project = inspect_archive(archive)
        master.db(master.catalog.deploy_project, "default", project.to_dict(), archive, actor="test")
        self._seq: dict[tuple[int, int], int] = {}

    def start(self, agent_id: str) -> Lease:
        m = self.master
        record = m.db(
            m.catalog.create_execution,
            "default",
            "etl",
            "load",
            # Stored as the master stores them: the sensitive value sealed.
            parameters=m.server.state.seal(
                m.db(m.catalog.get_project_version, "default", "etl").manifest,
                "load",
                {"rows": 10, "password": "s3cret"},
            ),
            actor="admin",
        )
        [task] = m.db(m.catalog.lease_tasks, agent_id, 10, 60)
        assert task.execution_id == record.execution_id
        return Lease(agent_id, record.execution_id, task.task_id, task.attempt)

    def lines(
        self, lease: Lease, texts: list[str], *, level: int = logging.INFO, source: Source = "stdout"
    ) -> None:
        key = (lease.task_id, lease.attempt)
        first = self._seq.get(key, 0) + 1
        self._seq[key] = first + len(texts) - 1
        now = datetime.now(UTC)
        events = [
            EventInput(lease.execution_id, lease.task_id, lease.attempt, first + i, now, level, source, text)
            for i, text in enumerate(texts)
        ]
        m = self.master
        assert m.db(m.catalog.add_events, lease.agent_id, events) == len(texts)
        m.loop.call_soon_threadsafe(m.server.state.wakeups.notify, "events")

    def finish(self, lease: Lease) -> None:
        m = self.master
        m.db(m.catalog.complete_task, lease.agent_id, lease.task_id, lease.attempt, "succeeded", exit_code=0)
        m.loop.call_soon_threadsafe(m.server.state.wakeups.notify, "events")


@pytest.fixture
def runs(master: RunningMaster, tmp_path: Path) -> Runs:
    return Runs(master, tmp_path / "project")


@pytest.fixture
def mh(tmp_path: Path) -> MasterHome:
    return build_master_home(tmp_path)


#: The mark of every browser test module: skipped only when Debian's ``chromium`` is missing (CI installs it).
NEEDS_CHROMIUM = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium is missing: apt-get install -y chromium"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, for one test module.

    Not pytest-playwright's session-wide browser: Playwright's sync API keeps its event loop marked
    as running in the main thread for as long as it is started, which would break every asyncio test
    that runs after the browser tests in the same session. Stopping it at the end of the module
    clears that. Never a downloaded browser (`playwright install`); Playwright adds --headless and
    --no-sandbox itself.
    """
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("chromium is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # Each test's master has a fresh self-signed certificate; the HTTP tests verify it properly.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1100, "height": 700})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def console_errors(page: Page) -> Iterator[list[str]]:
    """Script errors and CSP violations ("Refused to ...") of the page: none are expected.

    Chromium also logs every 4xx resource as an error ("Failed to load resource"), a wrong password's
    401 among them; those are the tests' own business.
    """
    errors: list[str] = []

    def seen(message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("console", seen)
    yield errors


def sign_in_page(page: Page, master: RunningMaster, name: str, path: str = "/") -> None:
    """Sign ``name`` in through the console's form at ``path`` and wait for the signed-in header."""
    page.goto(master.url + path)
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"{name} (")).to_be_visible()


@functools.cache
def password_hash(name: str) -> str:
    """argon2id is slow on purpose: hash each test password once per session."""
    return hash_password(PASSWORDS[name])


@pytest.fixture
def master(mh: MasterHome) -> Iterator[RunningMaster]:
    running = RunningMaster(mh)
    running.start()
    for name in PASSWORDS:
        running.db(running.catalog.add_user, name, ROLES[name], password_hash(name), actor="test")
    try:
        yield running
    finally:
        running.stop()


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def csrf(self) -> str:
        found = re.search(r'name="csrf-token" content="([^"]*)"', self.body)
        assert found, self.body[:500]
        return found.group(1)


@dataclass
class Client:
    """HTTPS to the console with one cookie jar; verifies the master certificate like a browser would."""

    master: RunningMaster
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        ctx = ssl.create_default_context(cadata=self.master.mh.master_pem)
        conn = http.client.HTTPSConnection("127.0.0.1", self.master.port, context=ctx, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        for raw in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0]
            if "expires=Thu, 01 Jan 1970" in raw or "Max-Age=0" in raw:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return Answer(response.status, response.headers, text)

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str], **kw: Any) -> Answer:
        return self.request("POST", path, form=form, **kw)

    def sign_in(self, name: str) -> Answer:
        page = self.get("/login")
        answer = self.post(
            "/login", {"csrf_token": page.csrf, "username": name, "password": PASSWORDS[name], "next": "/"}
        )
        assert answer.status == 303, answer.body[:500]
        return answer


@pytest.fixture
def client(master: RunningMaster) -> Client:
    return Client(master)


def wait_until(predicate: Callable[[], Any], *, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
