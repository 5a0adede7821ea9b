"""Principals, join tokens, master properties and the audit log."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from packfleet.catalog import Catalog
from packfleet.errors import CatalogError, Conflict, NotFound, PkiError

from .conftest import FakeClock

ADMIN_TP = "A1" * 20
OTHER_TP = "B2" * 20


def test_principals_are_stored_with_their_role_and_audited(catalog: Catalog) -> None:
    admin = catalog.add_principal("admin", "admin", actor="master init", thumbprint=ADMIN_TP.lower())
    web = catalog.add_principal("ops", "executor", actor="admin", password_hash="$argon2id$v=19$x")
    assert (admin.role, admin.thumbprint, admin.password_hash) == ("admin", ADMIN_TP, None)
    assert web.password_hash == "$argon2id$v=19$x" and web.thumbprint is None
    assert "password_hash" not in web.to_dict()
    assert catalog.get_principal("ops") == web
    assert [p.name for p in catalog.list_principals()] == ["admin", "ops"]
    with pytest.raises(Conflict, match="already exists"):
        catalog.add_principal("ops", "admin", actor="admin")
    with pytest.raises(Conflict, match="already belongs to principal 'admin'"):
        catalog.add_principal("other", "admin", actor="admin", thumbprint=ADMIN_TP)
    with pytest.raises(CatalogError, match="role 'root'"):
        catalog.add_principal("root", "root", actor="admin")  # type: ignore[arg-type]
    with pytest.raises(PkiError):
        catalog.add_principal("bad", "admin", actor="admin", thumbprint="xyz")
    removed = catalog.remove_principal("ops", actor="admin")
    assert removed.name == "ops"
    with pytest.raises(NotFound):
        catalog.get_principal("ops")
    actions = [(r.actor, r.action, r.target) for r in catalog.list_audit()]
    assert actions == [
        ("master init", "principal.add", "admin"),
        ("admin", "principal.add", "ops"),
        ("admin", "principal.remove", "ops"),
    ]


def test_ensure_principal_creates_then_changes_only_what_differs(catalog: Catalog) -> None:
    first = catalog.ensure_principal("admin", "admin", actor="init", thumbprint=ADMIN_TP)
    same = catalog.ensure_principal("admin", "admin", actor="init", thumbprint=ADMIN_TP)
    assert same == first
    moved = catalog.ensure_principal("admin", "admin", actor="init --force", thumbprint=OTHER_TP)
    assert moved.thumbprint == OTHER_TP and moved.id == first.id
    assert catalog.authorize(ADMIN_TP) is None
    assert [r.action for r in catalog.list_audit()] == ["principal.add", "principal.update"]


def test_join_tokens_are_created_once_with_at_least_one_use(catalog: Catalog, clock: FakeClock) -> None:
    token = catalog.create_join_token(
        "tok1",
        "hash",
        expires_at=clock.now + timedelta(hours=1),
        uses=2,
        enable=True,
        endpoint="https://master:8391",
        actor="admin",
    )
    assert (token.uses_left, token.enable, token.revoked_at) == (2, True, None)
    assert "secret_hash" not in token.to_dict()
    with pytest.raises(Conflict, match="already exists"):
        catalog.create_join_token(
            "tok1", "h", expires_at=clock.now, uses=1, enable=False, endpoint="e", actor="admin"
        )
    with pytest.raises(CatalogError, match="at least one use"):
        catalog.create_join_token(
            "tok2", "h", expires_at=clock.now, uses=0, enable=False, endpoint="e", actor="admin"
        )
    with pytest.raises(NotFound):
        catalog.get_join_token("nope")


def test_join_tokens_can_be_revoked_once(catalog: Catalog, clock: FakeClock) -> None:
    for name in ("short", "long"):
        catalog.create_join_token(
            name,
            "hash",
            expires_at=clock.now + timedelta(minutes=10),
            uses=5,
            enable=False,
            endpoint="https://master:8391",
            actor="admin",
        )
    revoked = catalog.revoke_join_token("long", actor="admin")
    assert revoked.revoked_at == clock.now
    assert catalog.revoke_join_token("long", actor="admin") == revoked
    assert [t.token_id for t in catalog.list_join_tokens()] == ["long", "short"]
    assert catalog.get_join_token("short").uses_left == 5
    actions = [r.action for r in catalog.list_audit()]
    assert actions == ["token.create", "token.create", "token.revoke"]


def test_master_properties(catalog: Catalog) -> None:
    assert catalog.get_property("SCHEMA") is None
    catalog.set_property("MasterOnline", "2024-06-01T12:00:00+00:00")
    catalog.set_property("MasterOnline", "2024-06-01T12:00:30+00:00")
    assert catalog.get_property("MasterOnline") == "2024-06-01T12:00:30+00:00"


def test_audit_log_pages_and_is_json_ready(catalog: Catalog, clock: FakeClock) -> None:
    for i in range(5):
        catalog.audit("admin", "binding.change", f"0.0.0.0:839{i}", {"when": clock.now, "n": i})
    first = catalog.list_audit(limit=2)
    rest = catalog.list_audit(after_id=first[-1].id)
    assert [r.details["n"] for r in first + rest] == [0, 1, 2, 3, 4]
    assert first[0].time == clock.now and first[0].details["when"] == clock.now.isoformat()
    json.dumps([r.to_dict() for r in first])


def test_an_identity_certificate_is_shared_until_its_principal_goes(
    catalog: Catalog, clock: FakeClock
) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"  # stored as given
    catalog.add_principal("alice", "viewer", actor="admin", thumbprint=ADMIN_TP, cert_pem=pem)
    catalog.add_principal("web", "executor", actor="admin", password_hash="$argon2id$v=19$x")
    catalog.add_principal("old", "admin", actor="admin", thumbprint=OTHER_TP)  # pinned without PEM
    [shared] = catalog.principal_certificates()
    assert (shared.thumbprint, shared.principal, shared.pem, shared.active) == (ADMIN_TP, "alice", pem, True)

    clock.advance(5)
    catalog.remove_principal("alice", actor="admin")
    catalog.remove_principal("old", actor="admin")  # nothing shared, nothing to record
    [revoked] = catalog.principal_certificates()
    assert revoked.thumbprint == ADMIN_TP and not revoked.active
    assert revoked.revoked_at == clock()

    # Pinned again (to someone else): the same row, active again.
    catalog.add_principal("bob", "admin", actor="admin", thumbprint=ADMIN_TP, cert_pem=pem)
    [again] = catalog.principal_certificates()
    assert (again.principal, again.active) == ("bob", True)
    # Re-pointed to another certificate by a re-run of master init: the old one is no longer shared.
    catalog.ensure_principal("bob", "admin", actor="init --force", thumbprint=OTHER_TP)
    assert [c.active for c in catalog.principal_certificates()] == [False]


def test_a_certificate_pem_needs_its_thumbprint(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="thumbprint"):
        catalog.add_principal("alice", "viewer", actor="admin", cert_pem="pem")
    assert catalog.principal_certificates() == [] and catalog.list_principals() == []
