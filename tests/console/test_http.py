"""The console over plain HTTPS: sign-in, sessions, CSRF, roles, headers, audit."""

from __future__ import annotations

import urllib.parse

from .conftest import Client


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
