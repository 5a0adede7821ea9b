"""Worker trust in the catalog: DESIGN.md "Certificates and trust", rule by rule."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from packfleet.catalog import Catalog, Principal
from packfleet.errors import CatalogError, Conflict, NotFound, PkiError
from packfleet.pki import load_credential_bytes

from .conftest import FakeClock, info, new_agent

MakeCert = Callable[[str], bytes]


def _actions(catalog: Catalog) -> list[tuple[str, str, str]]:
    return [(r.actor, r.action, r.target) for r in catalog.list_audit()]


# --- manager "worker add" and the first heartbeat ---------------------------------------------------


def test_added_certificate_is_pending_until_the_first_heartbeat_binds_it(
    catalog: Catalog, make_cert: MakeCert, clock: FakeClock
) -> None:
    pem = make_cert("worker1")
    cert = catalog.add_worker_certificate(pem, actor="admin", display_name="etl-1")
    expected = load_credential_bytes(pem).info()
    assert (cert.thumbprint, cert.sha256) == (expected.thumbprint, expected.sha256)
    assert cert.pending and cert.status == "active" and cert.agent_id is None
    assert cert.not_after == expected.not_after and cert.subject == expected.subject
    assert catalog.list_workers() == []
    pending = catalog.authorize(cert.thumbprint)
    assert pending == Principal("worker", "etl-1", None, False, cert.thumbprint, "active")

    agent_id = new_agent()
    clock.advance(30)
    outcome = catalog.worker_heartbeat(cert.thumbprint, info(agent_id, "w1"))

    assert outcome.state == "disabled"
    assert f"packfleet manager worker enable {agent_id}" in outcome.message
    worker = outcome.worker
    assert worker is not None
    assert worker.agent_id == agent_id and not worker.is_enabled
    assert worker.display_name == "w1"  # `worker add --name` holds until the worker reports its own
    assert worker.last_online_time == clock.now
    assert [c.thumbprint for c in worker.certificates] == [cert.thumbprint]
    assert _actions(catalog) == [
        ("admin", "certificate.add", cert.thumbprint),
        (f"worker:{agent_id}", "certificate.bind", cert.thumbprint),
    ]


def test_pending_certificate_added_with_enable_enables_its_worker_on_bind(
    catalog: Catalog, make_cert: MakeCert
) -> None:
    cert = catalog.add_worker_certificate(make_cert("w"), actor="admin", enable=True)
    agent_id = new_agent()
    outcome = catalog.worker_heartbeat(cert.thumbprint, info(agent_id))
    assert outcome.state == "enabled"
    assert outcome.worker is not None and outcome.worker.is_enabled
    principal = catalog.authorize(cert.thumbprint)
    assert principal is not None and principal.enabled and principal.agent_id == agent_id


def test_bound_heartbeat_records_the_worker_online_with_its_machine_facts(
    catalog: Catalog, worker: Callable[..., str], clock: FakeClock
) -> None:
    agent_id = worker("w1")
    [thumbprint] = [c.thumbprint for c in catalog.get_worker(agent_id).certificates]
    clock.advance(60)
    beat = dataclasses.replace(info(agent_id, "w1"), running_tasks=3, cpu_percent=55.0)
    outcome = catalog.worker_heartbeat(thumbprint, beat)
    assert outcome.state == "enabled"
    record = catalog.get_worker(agent_id)
    assert record.last_online_time == clock.now
    assert record.machine_info == {
        "ips": ["127.0.0.2"],
        "cpu_percent": 55.0,
        "memory_free_mb": 2048.0,
        "running_tasks": 3,
        "version": "0.1.0",
    }
    assert record.machine_name == "w1.example" and record.user_account == "packfleet"
    assert [a for _, a, _ in _actions(catalog)].count("certificate.bind") == 1  # no audit per beat
    catalog.update_worker(agent_id, actor="admin", display_name="etl-1")
    catalog.worker_heartbeat(thumbprint, beat)
    assert catalog.get_worker(agent_id).display_name == "etl-1"  # an administrator's rename sticks


def test_a_worker_without_a_name_of_its_own_keeps_the_administrators(
    catalog: Catalog, make_cert: MakeCert
) -> None:
    cert = catalog.add_worker_certificate(make_cert("w"), actor="admin", display_name="etl-2")
    agent_id = new_agent()
    outcome = catalog.worker_heartbeat(cert.thumbprint, dataclasses.replace(info(agent_id), display_name=""))
    assert outcome.worker is not None and outcome.worker.display_name == "etl-2"


def test_unknown_certificate_of_a_new_agent_registers_a_disabled_worker(
    catalog: Catalog, make_cert: MakeCert
) -> None:
    pem = make_cert("newcomer")
    thumbprint = load_credential_bytes(pem).thumbprint
    agent_id = new_agent()
    outcome = catalog.worker_heartbeat(
        thumbprint, info(agent_id, "newcomer"), pem=pem, pinned={thumbprint}.__contains__
    )
    assert outcome.state == "disabled"
    assert catalog.get_worker(agent_id).display_name == "newcomer"
    [cert] = catalog.certificates()
    assert cert.agent_id == agent_id and cert.subject == "CN=newcomer" and cert.not_after is not None
    assert _actions(catalog) == [(f"worker:{agent_id}", "worker.register", agent_id)]
    assert catalog.lease_tasks(agent_id, 5, 60) == []


def test_unknown_certificate_of_a_known_agent_is_refused_until_an_administrator_confirms(
    catalog: Catalog, worker: Callable[..., str], make_cert: MakeCert
) -> None:
    """The seed's manual "change the worker certificate": new cert in the master's Root store.

    It no longer binds by itself (anyone with a trusted certificate could take the worker over);
    the refusal names the command that confirms it, and that command binds it.
    """
    agent_id = worker("w1")
    [old] = [c.thumbprint for c in catalog.get_worker(agent_id).certificates]
    pem = make_cert("w1")
    new = load_credential_bytes(pem).thumbprint
    outcome = catalog.worker_heartbeat(new, info(agent_id, "w1"), pinned={new}.__contains__)
    assert outcome.state == "conflict" and outcome.worker is None
    assert new in outcome.message and agent_id in outcome.message
    assert outcome.fix == f"packfleet manager worker connect {agent_id} --cert {new}"
    assert {c.thumbprint for c in catalog.get_worker(agent_id).certificates} == {old}
    assert catalog.authorize(new) is None
    last = catalog.list_audit()[-1]
    assert (last.action, last.target) == ("certificate.bind-refused", new)
    assert last.details["agent_id"] == agent_id
    # A retry at the next heartbeat is refused again, but audited once.
    catalog.worker_heartbeat(new, info(agent_id, "w1"), pinned={new}.__contains__)
    assert [a for _, a, _ in _actions(catalog)].count("certificate.bind-refused") == 1
    assert catalog.refused_binds() == [(new, agent_id, outcome.message)]
    catalog.connect_worker_certificate(agent_id, pem, actor="admin")
    assert catalog.worker_heartbeat(new, info(agent_id, "w1")).state == "enabled"
    assert catalog.refused_binds() == []


def test_pending_certificate_claiming_a_known_agent_is_refused_even_with_enable(
    catalog: Catalog, worker: Callable[..., str], make_cert: MakeCert
) -> None:
    victim = worker("w1")
    for enable in (False, True):
        cert = catalog.add_worker_certificate(make_cert(f"x{enable}"), actor="admin", enable=enable)
        outcome = catalog.worker_heartbeat(cert.thumbprint, info(victim, "w1"))
        assert outcome.state == "conflict" and victim in outcome.message
        assert catalog.authorize(cert.thumbprint) == Principal(
            "worker", cert.thumbprint, None, False, cert.thumbprint, "active"
        )
    assert [w.agent_id for w in catalog.list_workers()] == [victim]


def test_certificate_added_for_a_named_worker_is_bound_at_once(
    catalog: Catalog, worker: Callable[..., str], make_cert: MakeCert
) -> None:
    agent_id = worker("w1")
    cert = catalog.add_worker_certificate(make_cert("w1b"), actor="admin", worker="w1")
    assert cert.agent_id == agent_id
    assert catalog.worker_heartbeat(cert.thumbprint, info(agent_id, "w1")).state == "enabled"
    assert ("admin", "certificate.bind", cert.thumbprint) in _actions(catalog)


@pytest.mark.parametrize("pinned", [None, set()], ids=["no-store", "not-in-store"])
def test_unknown_certificate_not_itself_pinned_neither_registers_nor_binds(
    catalog: Catalog, worker: Callable[..., str], make_cert: MakeCert, pinned: set[str] | None
) -> None:
    """A certificate that passed the handshake only by chaining to one in Root must not bind."""
    victim = worker("w1")
    before = catalog.list_audit()
    leaf = load_credential_bytes(make_cert("forged")).thumbprint
    check = None if pinned is None else pinned.__contains__
    for agent_id in (victim, new_agent()):
        outcome = catalog.worker_heartbeat(leaf, info(agent_id, "w1"), pinned=check)
        assert outcome.state == "conflict" and outcome.worker is None
        assert f"certificate {leaf} is not itself in the master's Root store" in outcome.message
    assert [w.agent_id for w in catalog.list_workers()] == [victim]
    assert leaf not in {c.thumbprint for c in catalog.get_worker(victim).certificates}
    assert catalog.authorize(leaf) is None
    refused = catalog.list_audit()[len(before) :]
    assert [(r.action, r.target) for r in refused] == [("certificate.bind-refused", leaf)] * 2


def test_certificate_of_another_worker_is_a_conflict_and_changes_nothing(
    catalog: Catalog, worker: Callable[..., str], clock: FakeClock
) -> None:
    owner = worker("w1")
    [thumbprint] = [c.thumbprint for c in catalog.get_worker(owner).certificates]
    before = catalog.list_audit()
    intruder = new_agent()
    clock.advance(10)
    outcome = catalog.worker_heartbeat(thumbprint, info(intruder, "w2"))
    assert outcome.state == "conflict" and outcome.worker is None
    assert thumbprint in outcome.message and owner in outcome.message and intruder in outcome.message
    assert [w.agent_id for w in catalog.list_workers()] == [owner]
    assert catalog.get_worker(owner).last_online_time != clock.now
    [refused] = catalog.list_audit()[len(before) :]
    assert (refused.action, refused.target, refused.details["agent_id"]) == (
        "certificate.bind-refused",
        thumbprint,
        intruder,
    )


def test_revoked_certificate_is_refused_and_never_authorized(
    catalog: Catalog, worker: Callable[..., str]
) -> None:
    agent_id = worker("w1")
    [thumbprint] = [c.thumbprint for c in catalog.get_worker(agent_id).certificates]
    revoked = catalog.revoke_certificate(thumbprint.lower(), actor="admin")
    assert revoked.status == "revoked"
    outcome = catalog.worker_heartbeat(thumbprint, info(agent_id, "w1"))
    assert outcome.state == "revoked" and thumbprint in outcome.message
    principal = catalog.authorize(thumbprint)
    assert principal is not None and not principal.enabled and principal.cert_status == "revoked"
    assert catalog.get_worker(agent_id).is_enabled  # the worker stays; only that certificate is gone
    catalog.revoke_certificate(thumbprint, actor="admin")  # again: no change, no second audit row
    assert [a for _, a, _ in _actions(catalog)].count("certificate.revoke") == 1
    with pytest.raises(NotFound):
        catalog.revoke_certificate("00" * 20, actor="admin")


def test_deleted_worker_is_told_so_and_can_be_added_again(
    catalog: Catalog, worker: Callable[..., str], make_cert: MakeCert
) -> None:
    agent_id = worker("w1")
    [thumbprint] = [c.thumbprint for c in catalog.get_worker(agent_id).certificates]
    assert catalog.delete_worker(agent_id, actor="admin") == [thumbprint]
    with pytest.raises(NotFound):
        catalog.get_worker(agent_id)
    [retired] = catalog.certificates()
    assert (retired.status, retired.agent_id, retired.display_name) == ("retired", None, "w1")
    outcome = catalog.worker_heartbeat(thumbprint, info(agent_id, "w1"))
    assert outcome.state == "deleted" and "packfleet manager worker add" in outcome.message
    principal = catalog.authorize(thumbprint)
    assert principal is not None and not principal.enabled and principal.cert_status == "retired"

    catalog.add_worker_certificate(retired.pem.encode() if retired.pem else b"", actor="admin")
    again = catalog.worker_heartbeat(thumbprint, info(agent_id, "w1"))
    assert again.state == "disabled"  # back, and waiting for an administrator
    assert ("admin", "worker.delete", agent_id) in _actions(catalog)


def test_adding_a_certificate_already_bound_is_a_conflict_naming_both(
    catalog: Catalog, make_cert: MakeCert
) -> None:
    pem = make_cert("w1")
    cert = catalog.add_worker_certificate(pem, actor="admin")
    agent_id = new_agent()
    catalog.worker_heartbeat(cert.thumbprint, info(agent_id))
    with pytest.raises(Conflict) as caught:
        catalog.add_worker_certificate(pem, actor="admin")
    assert cert.thumbprint in caught.value.message and agent_id in caught.value.message
    assert caught.value.fix is not None and "worker delete" in caught.value.fix


def test_re_adding_a_pending_certificate_updates_it(catalog: Catalog, make_cert: MakeCert) -> None:
    pem = make_cert("w1")
    catalog.add_worker_certificate(pem, actor="admin", display_name="first")
    again = catalog.add_worker_certificate(pem, actor="admin", display_name="second", enable=True)
    assert again.pending and again.display_name == "second" and again.enable_on_bind
    assert len(catalog.certificates()) == 1


def test_adding_a_revoked_certificate_is_refused(catalog: Catalog, make_cert: MakeCert) -> None:
    pem = make_cert("w1")
    cert = catalog.add_worker_certificate(pem, actor="admin")
    catalog.revoke_certificate(cert.thumbprint, actor="admin")
    with pytest.raises(Conflict, match="revoked"):
        catalog.add_worker_certificate(pem, actor="admin")


def test_adding_with_an_agent_id_binds_at_once_and_creates_the_worker(
    catalog: Catalog, make_cert: MakeCert
) -> None:
    agent_id = new_agent()
    cert = catalog.add_worker_certificate(
        make_cert("w9"), actor="admin", agent_id=agent_id.upper(), enable=True
    )
    assert cert.agent_id == agent_id and not cert.pending
    worker = catalog.get_worker("w9")  # named after the certificate's CN
    assert worker.agent_id == agent_id and worker.is_enabled
    assert catalog.worker_heartbeat(cert.thumbprint, info(agent_id, "w9")).state == "enabled"


def test_unreadable_certificate_is_a_pki_error(catalog: Catalog) -> None:
    with pytest.raises(PkiError):
        catalog.add_worker_certificate(b"not a certificate", actor="admin")


def test_admin_certificates_and_worker_certificates_never_mix(catalog: Catalog, make_cert: MakeCert) -> None:
    admin_pem = make_cert("admin")
    admin_tp = load_credential_bytes(admin_pem).thumbprint
    catalog.add_principal("admin", "admin", actor="master init", thumbprint=admin_tp)
    with pytest.raises(Conflict, match="not of a worker"):
        catalog.add_worker_certificate(admin_pem, actor="admin")
    outcome = catalog.worker_heartbeat(admin_tp, info(new_agent()))
    assert outcome.state == "conflict" and "'admin'" in outcome.message
    assert catalog.list_workers() == []

    worker_cert = catalog.add_worker_certificate(make_cert("w1"), actor="admin")
    with pytest.raises(Conflict, match="worker certificate"):
        catalog.add_principal("ops", "executor", actor="admin", thumbprint=worker_cert.thumbprint)


# --- authorize ----------------------------------------------------------------------------------------


def test_authorize_names_each_kind_of_client(
    catalog: Catalog, worker: Callable[..., str], make_cert: MakeCert
) -> None:
    admin_tp = load_credential_bytes(make_cert("admin")).thumbprint
    runner_tp = load_credential_bytes(make_cert("runner")).thumbprint
    catalog.add_principal("admin", "admin", actor="init", thumbprint=admin_tp)
    catalog.add_principal("runner", "executor", actor="admin", thumbprint=runner_tp)
    on = worker("on")
    off = worker("off", enabled=False)
    on_tp = catalog.get_worker(on).certificates[0].thumbprint
    off_tp = catalog.get_worker(off).certificates[0].thumbprint

    spaced = " ".join(admin_tp[i : i + 2].lower() for i in range(0, 40, 2))
    assert catalog.authorize(spaced) == Principal("admin", "admin", None, True, admin_tp, "active")
    assert catalog.authorize(runner_tp) == Principal("executor", "runner", None, True, runner_tp, "active")
    assert catalog.authorize(on_tp) == Principal("worker", "on", on, True, on_tp, "active")
    assert catalog.authorize(off_tp) == Principal("worker", "off", off, False, off_tp, "active")
    assert catalog.authorize("AB" * 20) is None
    catalog.set_worker_enabled(off, True, actor="admin")
    principal = catalog.authorize(off_tp)
    assert principal is not None and principal.enabled


# --- administering workers ------------------------------------------------------------------------------


def test_get_worker_by_id_thumbprint_or_unique_name(catalog: Catalog, worker: Callable[..., str]) -> None:
    a = worker("alpha")
    b1 = worker("beta")
    b2 = worker("beta")
    thumbprint = catalog.get_worker(a).certificates[0].thumbprint
    assert catalog.get_worker(a.upper()).agent_id == a
    assert catalog.get_worker("{" + a + "}").agent_id == a
    assert catalog.get_worker(":".join(thumbprint[i : i + 2] for i in range(0, 40, 2))).agent_id == a
    assert catalog.get_worker("alpha").agent_id == a
    with pytest.raises(Conflict) as caught:
        catalog.get_worker("beta")
    assert b1 in caught.value.message and b2 in caught.value.message
    with pytest.raises(NotFound) as missing:
        catalog.get_worker("gamma")
    assert missing.value.fix == "packfleet manager worker list"


def test_enable_update_delete_each_write_an_audit_row(catalog: Catalog, worker: Callable[..., str]) -> None:
    agent_id = worker("w1", enabled=False)
    start = len(catalog.list_audit())
    assert catalog.set_worker_enabled(agent_id, True, actor="alice").is_enabled
    assert not catalog.set_worker_enabled(agent_id, False, actor="alice").is_enabled
    updated = catalog.update_worker(agent_id, actor="bob", description="nightly", tags="etl,linux")
    assert (updated.description, updated.tags, updated.display_name) == ("nightly", "etl,linux", "w1")
    renamed = catalog.update_worker(agent_id, actor="bob", display_name="etl-1")
    assert renamed.display_name == "etl-1" and renamed.description == "nightly"
    catalog.delete_worker(agent_id, actor="carol")
    rows = catalog.list_audit()[start:]
    assert [(r.actor, r.action, r.target) for r in rows] == [
        ("alice", "worker.enable", agent_id),
        ("alice", "worker.disable", agent_id),
        ("bob", "worker.update", agent_id),
        ("bob", "worker.update", agent_id),
        ("carol", "worker.delete", agent_id),
    ]
    assert rows[2].details == {"description": "nightly", "tags": "etl,linux"}
    with pytest.raises(NotFound):
        catalog.set_worker_enabled(agent_id, True, actor="alice")


def test_list_workers_is_json_ready_with_certificates_and_expiry(
    catalog: Catalog, worker: Callable[..., str], clock: FakeClock
) -> None:
    agent_id = worker("w1")
    [record] = catalog.list_workers()
    data = json.loads(json.dumps(record.to_dict()))
    assert data["agent_id"] == agent_id and data["is_enabled"] is True
    assert data["last_online_time"] == clock.now.isoformat()
    [cert] = data["certificates"]
    assert cert["status"] == "active" and cert["not_after"] and len(cert["thumbprint"]) == 40
    assert "pem" not in json.dumps(catalog.certificates()[0].to_dict())


def test_agent_ids_must_be_uuids(catalog: Catalog, make_cert: MakeCert) -> None:
    cert = catalog.add_worker_certificate(make_cert("w1"), actor="admin")
    with pytest.raises(CatalogError, match="is not a worker agent id"):
        catalog.worker_heartbeat(cert.thumbprint, info("worker-one"))
