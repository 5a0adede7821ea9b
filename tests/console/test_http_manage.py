"""The console's new changes over plain HTTPS: CSRF on multipart uploads, roles, and refusals."""

from __future__ import annotations

import uuid

from packfleet.pki import CertStore, create_self_signed

from .conftest import Client, RunningMaster, Runs


def multipart(fields: dict[str, str], file_field: str, file_bytes: bytes) -> tuple[str, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="worker.cer"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n{file_bytes.decode()}\r\n--{boundary}--\r\n"
    )
    return "".join(parts), f"multipart/form-data; boundary={boundary}"


def post_multipart(client: Client, path: str, body: str, content_type: str) -> int:
    import http.client
    import ssl

    ctx = ssl.create_default_context(cadata=client.master.mh.master_pem)
    conn = http.client.HTTPSConnection("127.0.0.1", client.master.port, context=ctx, timeout=30)
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    try:
        conn.request(
            "POST", path, body=body.encode(), headers={"Content-Type": content_type, "Cookie": cookie}
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_an_upload_without_the_csrf_token_is_refused_and_with_it_is_reviewed(
    client: Client, master: RunningMaster
) -> None:
    client.sign_in("ada")
    token = client.get("/workers/connect").csrf
    cred = create_self_signed(["etl-7"], days=30)
    pem = cred.cert_pem()
    body, kind = multipart({"method": "upload"}, "certificate", pem)
    assert post_multipart(client, "/workers/connect/review", body, kind) == 403
    body, kind = multipart({"method": "upload", "csrf_token": token}, "certificate", pem)
    assert post_multipart(client, "/workers/connect/review", body, kind) == 200
    assert not CertStore(master.mh.home, "Root").contains(cred.thumbprint)  # nothing before Confirm


def test_a_file_that_is_no_certificate_is_refused_with_what_to_do(client: Client) -> None:
    client.sign_in("ada")
    token = client.get("/workers/connect").csrf
    answer = client.post(
        "/workers/connect/review", {"csrf_token": token, "method": "pem", "cert_pem": "not a certificate"}
    )
    assert answer.status == 400
    assert "the worker certificate cannot be used" in answer.body


def test_roles_for_the_new_changes(client: Client, master: RunningMaster, runs: Runs) -> None:
    agent = master.add_worker("etl-1")
    lease = runs.start(agent)
    client.sign_in("vera")
    token = client.get("/").csrf
    for path, form in (
        (f"/workers/{agent}/drain", {"reason": "x"}),
        (f"/workers/{agent}/edit", {"tags": "x"}),
        (f"/executions/{lease.execution_id}/rerun", {}),
        ("/executions/new", {"target": "default/etl/load", "action": "run"}),
        ("/workers/connect", {"method": "token"}),
    ):
        answer = client.post(path, {"csrf_token": token, **form})
        assert answer.status == 403, path
    assert len(master.db(master.catalog.list_executions)) == 1
    assert master.db(master.catalog.get_worker, agent).is_enabled
    assert master.db(master.catalog.list_join_tokens) == []
    other = Client(master)
    other.sign_in("otto")
    answer = other.post("/workers/connect", {"csrf_token": other.get("/").csrf, "method": "token"})
    assert answer.status == 403 and "needs the admin role" in answer.body
