"""Heartbeats and certificate lookups many at a time: the same answers as one at a time, in order,
and one bad heartbeat never fails the others of its batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from catalog.conftest import FakeClock, info, new_agent
from packfleet.catalog import Catalog, HeartbeatOutcome
from packfleet.errors import CatalogError
from packfleet.pki import create_self_signed, load_credential_bytes


def _pinned(_thumbprint: str) -> bool:
    return True


def test_a_batch_binds_records_and_refuses_as_separate_heartbeats_would(
    catalog: Catalog, worker: Callable[..., str]
) -> None:
    known = worker("known")
    known_cert = catalog.get_worker(known).certificates[0].thumbprint
    newcomer, rival = create_self_signed(["newcomer"]), create_self_signed(["rival"])
    claimed = new_agent()
    beats = [
        (known_cert, info(known, "known"), None),
        # An unknown certificate registers a new, disabled worker...
        (newcomer.thumbprint, info(claimed, "newcomer"), newcomer.cert_pem()),
        # ...so a second unknown certificate claiming the same AgentId in the same batch is refused.
        (rival.thumbprint, info(claimed, "rival"), rival.cert_pem()),
        (known_cert, info("not an agent id!", "known"), None),
    ]
    answers = catalog.worker_heartbeats(beats, pinned=_pinned)

    first, second, third, fourth = answers
    assert isinstance(first, HeartbeatOutcome) and first.state == "enabled"
    assert first.worker is not None and first.worker.agent_id == known
    assert isinstance(second, HeartbeatOutcome) and second.state == "disabled"
    assert isinstance(third, HeartbeatOutcome) and third.state == "conflict"
    assert isinstance(fourth, CatalogError)
    registered = catalog.get_worker(claimed)
    assert [c.thumbprint for c in registered.certificates] == [newcomer.thumbprint]
    assert registered.certificates[0].not_after is not None  # the PEM was read for the new certificate
    assert catalog.get_worker(known).last_online_time is not None


def test_heartbeats_of_bound_workers_record_each_one_online_the_last_one_winning(
    catalog: Catalog, worker: Callable[..., str], clock: FakeClock
) -> None:
    on, off = worker("on"), worker("off", enabled=False)
    cert_on, cert_off = (catalog.get_worker(a).certificates[0].thumbprint for a in (on, off))
    clock.advance(60)
    first, second = info(on, "on"), replace(info(on, "on"), cpu_percent=99.0, machine_name="moved")
    answers = catalog.worker_heartbeats(
        [(cert_on, first, None), (cert_off, info(off, "off"), None), (cert_on, second, None)]
    )
    assert [a.state for a in answers if isinstance(a, HeartbeatOutcome)] == ["enabled", "disabled", "enabled"]
    recorded = catalog.get_worker(on)
    assert recorded.last_online_time == clock.now and recorded.machine_name == "moved"
    assert recorded.machine_info["cpu_percent"] == 99.0
    assert catalog.get_worker(off).last_online_time == clock.now


def test_authorize_many_says_what_authorize_says(catalog: Catalog, worker: Callable[..., str]) -> None:
    enabled, disabled = worker("on"), worker("off", enabled=False)
    thumbprints = [catalog.get_worker(a).certificates[0].thumbprint for a in (enabled, disabled)]
    stranger = load_credential_bytes(create_self_signed(["nobody"]).cert_pem()).thumbprint
    found = catalog.authorize_many([*thumbprints, stranger, thumbprints[0].lower()])
    assert set(found) == {*thumbprints, stranger}
    for thumbprint in [*thumbprints, stranger]:
        assert found[thumbprint] == catalog.authorize(thumbprint)
    on = found[thumbprints[0]]
    assert on is not None and on.enabled and on.agent_id == enabled
    off = found[thumbprints[1]]
    assert off is not None and not off.enabled


def test_acceptances_of_many_workers_are_recorded_together(catalog: Catalog) -> None:
    first, second = new_agent(), new_agent()
    catalog.record_master_cert_accepts(first, ["A"])
    catalog.record_master_cert_accepts_many({first: ["A", "B"], second: ["A"]})
    assert catalog.master_cert_accepts() == {first: ["A", "B"], second: ["A"]}


def test_bound_heartbeats_record_the_usual_ones_and_leave_the_rest_untouched(
    catalog: Catalog, worker: Callable[..., str], clock: FakeClock
) -> None:
    on, off, revoked = worker("on"), worker("off", enabled=False), worker("revoked")
    cert_on, cert_off, cert_revoked = (
        catalog.get_worker(a).certificates[0].thumbprint for a in (on, off, revoked)
    )
    catalog.revoke_certificate(cert_revoked, actor="admin")
    stranger = create_self_signed(["stranger"])
    clock.advance(60)
    answers = catalog.bound_heartbeats(
        [
            (cert_on, info(on, "on")),
            (cert_off, info(off, "off")),
            (cert_revoked, info(revoked, "revoked")),  # revoked: worker_heartbeat says so
            (stranger.thumbprint, info(new_agent(), "stranger")),  # unknown: it would register
            (cert_on, info(off, "on")),  # another worker's AgentId: a conflict
            (cert_on, info("not an agent id!", "on")),  # InvalidValue
        ]
    )
    states = [a.state if a is not None else None for a in answers]
    assert states == ["enabled", "disabled", None, None, None, None]
    assert answers[0] == catalog.worker_heartbeat(cert_on, info(on, "on"))  # what it would have said
    assert catalog.get_worker(on).last_online_time == clock.now
    assert catalog.get_worker(revoked).last_online_time != clock.now
    assert [c.thumbprint for c in catalog.certificates()].count(stranger.thumbprint) == 0


def test_a_heartbeat_that_reports_nothing_new_only_moves_the_last_online_time(
    catalog: Catalog, worker: Callable[..., str], clock: FakeClock
) -> None:
    agent = worker("steady")
    cert = catalog.get_worker(agent).certificates[0].thumbprint
    first = catalog.get_worker(agent)
    clock.advance(10)
    [same] = catalog.bound_heartbeats([(cert, info(agent, "steady"))])
    assert same is not None and same.worker is not None
    again = catalog.get_worker(agent)
    assert again.last_online_time == clock.now and again.machine_info == first.machine_info
    assert same.worker == again  # the answer is the worker as the catalog now holds it
    clock.advance(10)
    moved = replace(info(agent, "steady"), cpu_percent=80.0, clock_skew_seconds=1.5)
    [changed] = catalog.bound_heartbeats([(cert, moved)])
    latest = catalog.get_worker(agent)
    assert latest.machine_info["cpu_percent"] == 80.0 and latest.clock_skew_seconds == 1.5
    assert changed is not None and changed.worker == latest
