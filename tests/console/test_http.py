"""The console over plain HTTPS: sign-in, sessions, CSRF, roles, headers, audit."""

from __future__ import annotations

import json
import time
import urllib.parse

from packfleet.console import hash_password

from .conftest import Client, RunningMaster, Runs


def test_pages_need_sign_in_and_sign_in_opens_them(client: Client) -> None:
    first = client.get("/workers?state=online")
    assert first.status == 302
    location = urllib.parse.urlsplit(first.headers["Location"])
    assert location.path == "/login"
    assert urllib.parse.parse_qs(location.query) == {"next": ["/workers?state=online"]}
    page = client.get("/login")
    assert page.status == 200 and 'for="username"' in page.body
    done = client.post(
        "/login",
        {"csrf_token": page.csrf, "username": "vera", "password": "viewer-password-1", "next": "/workers"},
    )
    assert done.status == 303 and done.headers["Location"] == "/workers"
    for path in ("/", "/workers", "/executions", "/certificates", "/audit"):
        answer = client.get(path)
        assert answer.status == 200, (path, answer.body[:300])
        assert "vera (viewer)" in answer.body


def test_every_answer_carries_the_security_headers_and_the_cookie_is_locked_down(client: Client) -> None:
    page = client.get("/login")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    [cookie] = page.headers.get_all("Set-Cookie") or []
    assert cookie.startswith("__Host-packfleet-console=")
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute in cookie, cookie
    assert "Domain" not in cookie
    assert "<script" not in page.body.replace('<script src="/static/console.js" defer></script>', "")
    missing = client.get("/nowhere")
    assert missing.status in (302, 404)
    assert missing.headers["Content-Security-Policy"] == csp


def test_sign_in_starts_a_new_session_and_sign_out_ends_it(client: Client, master: RunningMaster) -> None:
    page = client.get("/login")
    anonymous_cookie, anonymous_csrf = dict(client.cookies), page.csrf
    client.post("/login", {"csrf_token": anonymous_csrf, "username": "vera", "password": "viewer-password-1"})
    assert client.cookies != anonymous_cookie, "the session must be a new one after sign-in"
    home = client.get("/")
    assert home.status == 200 and home.csrf != anonymous_csrf
    signed_in = dict(client.cookies)
    out = client.post("/logout", {"csrf_token": home.csrf})
    assert out.status == 303 and out.headers["Location"] == "/login"
    assert not client.cookies
    # Replaying the cookie of the ended session opens nothing.
    client.cookies = signed_in
    assert client.get("/").status == 302
    actions = [a.action for a in master.db(master.catalog.list_audit, actor="console:vera")]
    assert actions == ["console.sign_in", "console.sign_out"]


def test_a_wrong_password_is_refused_and_repeated_failures_are_rate_limited(client: Client) -> None:
    page = client.get("/login")
    for _ in range(5):
        wrong = client.post(
            "/login", {"csrf_token": page.csrf, "username": "vera", "password": "not-her-password"}
        )
        assert wrong.status == 401 and "Wrong user name or password." in wrong.body
    unknown = client.post(
        "/login", {"csrf_token": page.csrf, "username": "nobody", "password": "whatever-it-is"}
    )
    assert unknown.status == 401 and "Wrong user name or password." in unknown.body
    # Now even the right password waits: the name has used up its attempts.
    limited = client.post(
        "/login", {"csrf_token": page.csrf, "username": "vera", "password": "viewer-password-1"}
    )
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert client.get("/").status == 302


def test_a_password_change_ends_the_sessions_signed_in_before(client: Client, master: RunningMaster) -> None:
    client.sign_in("vera")
    assert client.get("/").status == 200
    time.sleep(0.01)
    master.db(master.catalog.set_user_password, "vera", hash_password("a-brand-new-password"), actor="test")
    assert client.get("/").status == 302


def test_a_change_without_the_csrf_token_is_refused(client: Client, master: RunningMaster) -> None:
    agent_id = master.add_worker()
    client.sign_in("otto")
    page = client.get(f"/workers/{agent_id}")
    refused = client.post(f"/workers/{agent_id}/disable", {"reason": "maintenance"})
    assert refused.status == 403 and "CSRF token" in refused.body
    forged = client.post(f"/workers/{agent_id}/disable", {"reason": "maintenance", "csrf_token": "forged"})
    assert forged.status == 403
    cross_site = client.post(
        f"/workers/{agent_id}/disable",
        {"reason": "maintenance", "csrf_token": page.csrf},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status == 403 and "cross-site" in cross_site.body
    assert master.db(master.catalog.get_worker, agent_id).is_enabled


def test_roles_decide_who_may_change_what(client: Client, master: RunningMaster) -> None:
    agent_id = master.add_worker()
    client.sign_in("vera")
    page = client.get(f"/workers/{agent_id}")
    assert ">Disable<" not in page.body, "a viewer is offered no button it may not press"
    refused = client.post(f"/workers/{agent_id}/disable", {"reason": "x", "csrf_token": page.csrf})
    assert refused.status == 403 and "needs the operator role" in refused.body
    assert master.db(master.catalog.get_worker, agent_id).is_enabled

    operator = Client(master)
    operator.sign_in("otto")
    page = operator.get(f"/workers/{agent_id}")
    no_reason = operator.post(f"/workers/{agent_id}/disable", {"reason": " ", "csrf_token": page.csrf})
    assert no_reason.status == 400
    done = operator.post(
        f"/workers/{agent_id}/disable", {"reason": "disk replacement", "csrf_token": page.csrf}
    )
    assert done.status == 303
    assert not master.db(master.catalog.get_worker, agent_id).is_enabled
    [row] = master.db(master.catalog.list_audit, action="worker.disable")
    assert (row.actor, row.target, row.details) == ("console:otto", agent_id, {"reason": "disk replacement"})
    delete = operator.post(f"/workers/{agent_id}/delete", {"confirm": agent_id, "csrf_token": page.csrf})
    assert delete.status == 403 and "needs the admin role" in delete.body

    admin = Client(master)
    admin.sign_in("ada")
    confirm = admin.get(f"/workers/{agent_id}/delete")
    assert "Delete worker worker1" in confirm.body
    skipped = admin.post(f"/workers/{agent_id}/delete", {"csrf_token": confirm.csrf})
    assert skipped.status == 400, "deleting without the confirmation step must not happen"
    gone = admin.post(f"/workers/{agent_id}/delete", {"confirm": agent_id, "csrf_token": confirm.csrf})
    assert gone.status == 303 and gone.headers["Location"] == "/workers?done=deleted"
    assert [w.agent_id for w in master.db(master.catalog.list_workers)] == []
    assert [r.actor for r in master.db(master.catalog.list_audit, action="worker.delete")] == ["console:ada"]


def test_an_operator_stops_an_execution_and_the_audit_names_them(
    client: Client, master: RunningMaster, runs: Runs
) -> None:
    lease = runs.start(master.add_worker())
    client.sign_in("otto")
    page = client.get(f"/executions/{lease.execution_id}")
    assert "s3cret" not in page.body and "********" in page.body, "sensitive parameters are masked"
    stopped = client.post(f"/executions/{lease.execution_id}/stop", {"csrf_token": page.csrf})
    assert stopped.status == 303
    assert master.db(master.catalog.get_execution, lease.execution_id).status.label == "stopping"
    assert [r.actor for r in master.db(master.catalog.list_audit, action="execution.cancel")] == [
        "console:otto"
    ]


def test_executions_filter_and_page_on_the_server(client: Client, master: RunningMaster, runs: Runs) -> None:
    agent_id = master.add_worker()
    ids = [runs.start(agent_id).execution_id for _ in range(27)]
    client.sign_in("vera")
    first = client.get("/executions?status=5")  # pending: none, they are all leased
    assert "No execution matches" in first.body
    page1 = client.get("/executions?folder=default")
    assert f'href="/executions/{ids[-1]}"' in page1.body and f'href="/executions/{ids[1]}"' not in page1.body
    assert "page=2" in page1.body and "folder=default" in page1.body.split("page=2")[0].rsplit("href", 1)[1]
    page2 = client.get("/executions?folder=default&page=2")
    assert f'href="/executions/{ids[0]}"' in page2.body and f'href="/executions/{ids[-1]}"' not in page2.body
    assert "No execution matches" in client.get("/executions?caller=someone-else").body


def _sse(client: Client, path: str, headers: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Read a whole (ending) event stream: (id, event, data) per message."""
    answer = client.get(path, headers=headers)
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/event-stream")
    messages = []
    for block in answer.body.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            messages.append((fields.get("id", ""), fields["event"], fields.get("data", "")))
    return messages


def test_the_live_tail_resumes_after_last_event_id_and_ends_with_the_execution(
    client: Client, master: RunningMaster, runs: Runs
) -> None:
    lease = runs.start(master.add_worker())
    runs.lines(lease, [f"line {i}" for i in range(1, 6)])
    runs.finish(lease)
    client.sign_in("vera")
    whole = _sse(client, f"/executions/{lease.execution_id}/events")
    lines = [json.loads(data)["message"] for _, event, data in whole if event == "line"]
    assert lines[:5] == [f"line {i}" for i in range(1, 6)]
    assert whole[-1][1] == "end"
    third = whole[2][0]
    resumed = _sse(client, f"/executions/{lease.execution_id}/events", headers={"Last-Event-ID": third})
    again = [json.loads(data)["message"] for _, event, data in resumed if event == "line"]
    assert again == lines[3:], "a reconnect resumes right after the last id it saw, no gap, no repeat"
    by_query = _sse(client, f"/executions/{lease.execution_id}/events?after={third}")
    assert [m for m in by_query if m[1] == "line"] == [m for m in resumed if m[1] == "line"]


def test_the_dashboard_warns_of_expiring_certificates_and_counts_the_fleet(
    client: Client, master: RunningMaster, runs: Runs
) -> None:
    master.add_worker("etl-1")
    soon = master.add_worker("etl-2", days=5)
    master.db(master.catalog.set_worker_enabled, soon, False, actor="test")
    lease = runs.start(master.add_worker("etl-3"))
    runs.finish(lease)
    master.db(
        master.catalog.create_execution, "default", "etl", "load", parameters={"rows": 1}, actor="admin"
    )
    client.sign_in("vera")
    page = client.get("/")
    assert "Expires in 5 days" in page.body and "etl-2" in page.body
    assert "online, enabled</a>: 2" in page.body and "online, disabled</a>: 1" in page.body
    assert 'class="big">1</p>' in page.body and "tasks waiting; the oldest since" in page.body
    assert "<li>succeeded: 1</li>" in page.body and "<li>pending: 1</li>" in page.body
    assert "reachable" in page.body and master.mh.master.thumbprint in page.body
    certificates = client.get("/certificates")
    assert certificates.body.count("<tr>") == 1 + 1 + 1 + 3  # header, master, admin, three workers
    workers = client.get("/workers?q=etl-2")
    assert "1 worker." in workers.body and "online, disabled" in workers.body
    by_cert = client.get("/workers?sort=cert&order=asc")
    assert by_cert.body.index(">etl-2<") < by_cert.body.index(">etl-1<")


def test_the_dashboard_shows_a_rotation_in_progress_and_certificates_lists_the_next_one(
    client: Client, master: RunningMaster
) -> None:
    assert master.server.services is not None
    rotation = master.server.services.require_rotation()
    started = master.run(rotation.advance("start", cns=["127.0.0.1", "localhost"], actor="admin"))
    client.sign_in("vera")
    page = client.get("/")
    assert "Master certificate rotation in progress (announced:" in page.body
    assert master.mh.master.thumbprint in page.body
    listed = client.get("/certificates").body
    assert "standby" in listed and started["new"] in listed


def test_the_audit_page_filters_and_pages_newest_first(client: Client, master: RunningMaster) -> None:
    for i in range(30):
        master.db(master.catalog.audit, "admin", "worker.tag", f"w{i:02d}", {"n": i})
    master.db(master.catalog.audit, "console:otto", "worker.disable", "w99", {"reason": "disk"})
    client.sign_in("vera")
    page = client.get("/audit?action=worker")
    assert page.body.index("w99") < page.body.index("w29") and "w04" not in page.body
    older = client.get(
        "/audit" + page.body.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    )
    assert "w04" in older.body and "w29" not in older.body and "w99" not in older.body
    only = client.get("/audit?actor=console%3Aotto")
    assert "w99" in only.body and "w29" not in only.body and "reason: disk" in only.body
