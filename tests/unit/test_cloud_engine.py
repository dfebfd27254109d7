"""The cloud engine against the fake backend over real HTTPS (mutual TLS) on 127.0.0.1, on
simulated time: delivery exactly once in effect, outages without storms, Retry-After, bad
answers, bad documents, TLS, deadlines, migration, the lease, send-to-car and linking."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.cloud_contract import assert_contract
from tests.unit.cloud_env import DAY, HOUR, Env, FakeNav


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    await e.cloud.start()
    yield e
    await e.stop()
    await e.cloud.close()
    assert_contract(e.cloud)  # every request the engine sent and every answer, per docs/cloud-api.yaml


async def test_first_sync_discovers_fetches_entitlements_and_goes_online(env: Env) -> None:
    eng = await env.start()
    assert eng.backend_state == "online" and eng.client is not None and eng.client.version == 1
    assert eng.held is not None and eng.held.version == 1
    assert eng.lease.source == "backend"
    assert eng.features["remote_navigation"].enabled
    assert [r.op for r in env.cloud.log] == ["discovery", "entitlements", "destinations"]


async def test_register_is_delivered_once_even_when_the_answer_is_lost(env: Env) -> None:
    env.cloud.set_fault("drop_response", op="register", count=1)
    eng = await env.start()
    assert eng.register() == "pending"
    await env.settle()
    assert eng.registration == "pending" and eng.outbox.depth() == 1  # acted, but we never heard
    await env.advance(2.0)  # first retry within base_delay (full jitter)
    assert eng.registration == "registered" and eng.outbox.depth() == 0
    tries = env.cloud.requests("register")
    assert len(tries) == 2 and tries[0].key == tries[1].key and tries[1].replayed
    assert len(env.cloud.effects_of("register")) == 1


async def test_outage_has_no_request_storm_and_everything_drains_once_on_return(env: Env) -> None:
    eng = await env.start()
    assert eng.client is not None
    await env.cloud.set_listener("old", "offline")
    eng.register()
    for i in range(3):
        eng.set_consent(f"share_{i}", True)
    before = eng.client.requests
    await env.advance(24 * HOUR)
    attempts = eng.client.requests - before
    # Breaker: 5 quick failures, then probes at most every 10 min on average every 5 (full jitter).
    assert attempts <= 5 + 24 * HOUR / 300 * 1.4, attempts
    assert eng.backend_state == "offline" and "cannot connect" in eng.backend_reason
    assert eng.outbox.depth() == 4
    await env.cloud.set_listener("old", "up")
    await env.advance(601.0)  # the next probe comes within breaker_max_cooldown
    assert eng.backend_state == "online" and eng.outbox.depth() == 0
    assert eng.registration == "registered"
    assert len(env.cloud.effects_of("register")) == 1
    assert sorted(e.detail["name"] for e in env.cloud.effects_of("consent")) == ["share_0", "share_1", "share_2"]


@pytest.mark.parametrize("status", [503, 429, 500, 502])
async def test_retry_after_is_honoured(env: Env, status: int) -> None:
    eng = await env.start()
    env.cloud.set_fault("status", status=status, retry_after="120", op="consent", count=1)
    eng.set_consent("analytics", False)
    await env.settle()
    assert eng.backend_state == "degraded" and f"HTTP {status}" in eng.backend_reason
    assert eng.sync_now().startswith("deferred: the backend asked us to wait until")
    await env.advance(119.0)
    assert len(env.cloud.requests("consent")) == 1  # nothing before Retry-After
    await env.advance(20.0)  # Retry-After plus at most 10 % + 1 s of jitter
    assert len(env.cloud.requests("consent")) == 2 and eng.outbox.depth() == 0
    assert eng.backend_state == "online"


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_without_retry_after_back_off_and_recover(env: Env, status: int) -> None:
    eng = await env.start()
    env.cloud.set_fault("status", status=status, op="consent", count=3)
    eng.set_consent("analytics", True)
    await env.settle()
    assert eng.backend_state == "degraded"
    await env.advance(1 + 2 + 4 + 1)  # the ceilings of the first three retries
    assert eng.outbox.depth() == 0 and len(env.cloud.requests("consent")) == 4
    assert len(env.cloud.effects_of("consent")) == 1 and eng.backend_state == "online"


@pytest.mark.parametrize(("mode", "why"), [("malformed_json", "not valid JSON"),
                                           ("wrong_content_type", "text/html")])
async def test_unusable_answers_keep_the_good_document(env: Env, mode: str, why: str) -> None:
    eng = await env.start()
    env.cloud.issue_entitlements(env.vin, {"remote_navigation": {"enabled": False}})
    env.cloud.set_fault(mode, op="entitlements", count=1)
    eng.sync_now()
    await env.settle()
    assert eng.backend_state == "degraded" and why in eng.backend_reason
    assert eng.held is not None and eng.held.version == 1 and eng.features["remote_navigation"].enabled
    eng.sync_now()
    await env.settle()
    assert eng.held.version == 2 and not eng.features["remote_navigation"].enabled
    assert "not entitled" in eng.features["remote_navigation"].reason


@pytest.mark.parametrize(("mode", "code"), [("bad_signature", "bad_signature"), ("expired", "expired"),
                                            ("rolled_back", "rollback"), ("wrong_vehicle", "wrong_vehicle")])
async def test_invalid_documents_are_rejected_reported_and_never_replace_the_good_one(
        env: Env, mode: str, code: str) -> None:
    env.cloud.issue_entitlements(env.vin)  # the backend is at v2 before the car first syncs
    eng = await env.start()
    assert eng.held is not None and eng.held.version == 2
    features = {k: v.enabled for k, v in eng.features.items()}
    env.cloud.set_fault(mode, op="entitlements", count=1)
    eng.sync_now()
    await env.settle()
    assert eng.held.version == 2 and {k: v.enabled for k, v in eng.features.items()} == features
    assert eng.lease.source == "cached"  # still ours, but the backend did not vouch for it this time
    [(reason,)] = env.kinds("rejected")
    assert f"({code})" in reason and eng.last_rejection[0] == reason
    assert eng.backend_state == "degraded" and code in eng.backend_reason
    eng.sync_now()
    await env.settle()
    assert eng.backend_state == "online"  # the next good answer clears it; the rejection stays on record
    assert eng.last_rejection[0] == reason


async def test_untrusted_server_certificate_is_refused(env: Env) -> None:
    await env.cloud.set_listener("old", "untrusted_tls")
    eng = await env.start()
    assert eng.backend_state == "degraded" and "TLS" in eng.backend_reason
    assert eng.held is None and env.cloud.log == []  # not one request reached the impostor's handler


async def test_black_hole_is_cut_by_the_request_deadline(env: Env) -> None:
    await env.cloud.set_listener("old", "blackhole")
    t0 = time.monotonic()
    eng = await env.start(request_timeout=0.3)
    assert time.monotonic() - t0 < 3.0
    assert eng.backend_state == "degraded" and "no answer within 0.3s" in eng.backend_reason


async def test_a_slow_backend_within_the_deadline_is_fine_beyond_it_is_not(env: Env) -> None:
    env.cloud.set_fault("slow", delay=0.1, count=3)
    eng = await env.start(request_timeout=1.0)
    assert eng.backend_state == "online"
    env.cloud.set_fault("slow", delay=1.5, op="consent", count=1)
    eng.set_consent("x", True)
    await env.settle()
    assert eng.backend_state == "degraded" and eng.outbox.depth() == 1


async def test_permanent_redirects_are_followed_and_remembered_then_discovery_moves_us_to_v2(env: Env) -> None:
    eng = await env.start()
    assert eng.client is not None
    await env.cloud.migrate("migrating")
    eng.register()
    await env.settle()
    assert eng.registration == "registered"
    assert [(r.listener, r.status) for r in env.cloud.requests("register")] == [("old", 308), ("new", 201)]
    eng.sync_now()
    await env.settle()
    eng.sync_now()
    await env.settle()
    # The entitlements URL was redirected once, then remembered: the second sync went straight there.
    assert [(r.listener, r.status) for r in env.cloud.requests("entitlements")][1:] == [
        ("old", 308), ("new", 304), ("new", 304)]
    await env.advance(DAY + 2 * HOUR)  # discovery's refresh_after passes; the next sync re-reads it
    assert eng.client.version == 2 and eng.client.discovery_url.startswith(env.cloud.new.base)
    assert env.cloud.requests("entitlements")[-1].version == 2
    assert len(env.cloud.effects_of("register")) == 1


async def test_gone_endpoint_triggers_rediscovery_onto_the_new_version(env: Env) -> None:
    eng = await env.start()
    assert eng.client is not None
    await env.cloud.migrate("migrated")  # straight to the end state: old API answers 410
    eng.register()
    await env.settle()
    assert [(r.listener, r.status) for r in env.cloud.requests("register")] == [("old", 410), ("new", 201)]
    assert [r.listener for r in env.cloud.requests("discovery")] == ["old", "old", "new"]
    assert eng.client.version == 2 and eng.registration == "registered"
    assert len(env.cloud.effects_of("register")) == 1


async def test_weeks_away_then_gone_and_rediscovered_registration_completes_once(env: Env) -> None:
    eng = await env.start(grace=7 * DAY)
    assert eng.client is not None
    await env.cloud.set_listener("old", "offline")
    eng.register()
    eng.set_consent("share_location", True)
    await env.advance(21 * DAY)
    assert eng.registration == "pending" and eng.backend_state == "offline"
    env.cloud.issue_entitlements(env.vin, lease=30 * DAY)  # the new system has a new document
    await env.cloud.migrate("migrated")  # old API answers 410; discovery redirects to the new address
    await env.cloud.set_listener("old", "up")
    await env.advance(601.0)
    assert eng.registration == "registered" and eng.outbox.depth() == 0
    assert eng.client.version == 2 and eng.backend_state == "online"
    [done] = [r for r in env.cloud.requests("register") if r.status == 201]
    assert done.listener == "new" and done.version == 2
    assert len(env.cloud.effects_of("register")) == 1 and len(env.cloud.effects_of("consent")) == 1
    assert eng.held is not None and eng.held.version == 2 and eng.lease.source == "backend"


async def test_etag_makes_an_unchanged_document_cost_a_304(env: Env) -> None:
    eng = await env.start()
    eng.sync_now()
    await env.settle()
    assert [r.status for r in env.cloud.requests("entitlements")] == [200, 304]
    assert eng.lease.source == "backend"


async def test_lease_then_grace_then_offline_policy_while_the_backend_is_away(tmp_path: Path) -> None:
    env = Env(tmp_path, lease=10 * DAY)
    await env.cloud.start()
    try:
        eng = await env.start(grace=5 * DAY, offline_policy={"remote_navigation": False, "wifi_hotspot": True})
        await env.cloud.set_listener("old", "offline")
        await env.advance(9 * DAY)
        assert eng.lease.source == "cached" and eng.features["remote_navigation"].enabled
        await env.advance(2 * DAY)
        assert eng.lease.source == "grace" and eng.features["remote_navigation"].enabled
        await env.advance(5 * DAY)
        assert eng.lease.source == "offline-policy"
        assert not eng.features["remote_navigation"].enabled and eng.features["wifi_hotspot"].enabled
        changes = [(n, st.enabled) for n, st in env.kinds("feature") if n == "remote_navigation"]
        assert changes[-1] == ("remote_navigation", False)
        # The switch happened at the instant grace ended, not at some later poll.
        assert eng.features["calls"].enabled and eng.features["calls"].source == "local"
    finally:
        await env.stop()
        await env.cloud.close()
    assert_contract(env.cloud)


async def test_send_to_car_is_handed_to_navigation_then_acknowledged(env: Env) -> None:
    env.nav = FakeNav(fail=1)
    did = env.cloud.send_to_car(env.vin, "Office", lat=48.1, lon=11.5)
    bad = env.cloud.send_to_car(env.vin, "Nowhere", lat=123.0, lon=0.0)
    eng = await env.start()
    assert env.nav.accepted == [] and eng.pending_destinations() == 1  # the sink failed once
    await env.advance(2.0)
    [(dest, source, ref)] = env.nav.accepted
    assert (dest.label, dest.lat, source, ref) == ("Office", 48.1, "cloud", did)
    acks = {e.detail["id"]: e.detail["result"] for e in env.cloud.effects_of("ack")}
    assert acks == {did: "accepted", bad: "rejected"}
    eng.sync_now()
    await env.settle()
    assert len(env.nav.accepted) == 1 and len(env.cloud.effects_of("ack")) == 2


async def test_each_state_the_relay_reports_is_acknowledged_once(env: Env) -> None:
    """accepted (the car took it) -> shown -> driver_accepted, one request each, with an
    idempotency key derived from (destination, state): reported twice, sent once."""
    env.nav = FakeNav()
    did = env.cloud.send_to_car(env.vin, "Office", lat=48.1, lon=11.5)
    other = env.cloud.send_to_car(env.vin, "Gym", address="1 High Street")
    eng = await env.start()
    for event in ("shown", "driver_accepted", "shown", "driver_accepted"):
        eng.destination_event(did, "intent-1", event)
    eng.destination_event(other, "intent-2", "expired")
    eng.destination_event(other, "intent-2", "expired")
    await env.advance(5.0)
    got = [(e.detail["id"], e.detail["result"]) for e in env.cloud.acks()]
    assert [r for i, r in got if i == did] == ["accepted", "shown", "driver_accepted"]
    assert [r for i, r in got if i == other] == ["accepted", "expired"]
    sent = [json.loads(r.request_body) for r in env.cloud.requests("ack")]
    assert len(sent) == 5, "one request per (destination, state)"
    keys = [r.key for r in env.cloud.requests("ack")]
    assert len(set(keys)) == 5
    eng.sync_now()
    await env.settle()
    assert len(env.cloud.acks()) == 5 and len(env.nav.accepted) == 2


async def test_a_rejected_document_is_reported_once_then_costs_a_304_until_it_changes(env: Env) -> None:
    eng = await env.start()
    assert eng.held is not None and eng.held.version == 1
    env.cloud.set_fault("bad_signature", op="entitlements")  # every answer: the same bad document
    for _ in range(3):
        eng.sync_now()
        await env.settle()
    [report] = env.cloud.reports(env.vin)
    assert report["reason"] == "bad_signature" and report["version"] == 2 and report["kid"] == "sim-1"
    assert report["etag"].startswith('"') and "signature" in report["detail"]
    statuses = [r.status for r in env.cloud.requests("entitlements")]
    assert statuses == [200, 200, 304, 304], "the bad document is downloaded in full once"
    bad_etag = report["etag"]
    assert bad_etag in env.cloud.requests("entitlements")[-1].request_headers["If-None-Match"]
    assert eng.held.version == 1 and eng.backend_state == "degraded" and "bad_signature" in eng.backend_reason
    assert len(env.cloud.requests("entitlements_report")) == 1
    # The backend fixes it: a new document (another ETag) is downloaded and taken.
    env.cloud.clear_faults()
    env.cloud.issue_entitlements(env.vin)
    eng.sync_now()
    await env.settle()
    assert env.cloud.requests("entitlements")[-1].status == 200
    assert eng.held.version == 2 and eng.backend_state == "online" and eng.rejected_etag == ""
    assert len(env.cloud.reports(env.vin)) == 1


async def test_a_backend_without_the_report_endpoint_gets_no_report(tmp_path: Path) -> None:
    env = Env(tmp_path, reports=False)
    await env.cloud.start()
    try:
        eng = await env.start()
        env.cloud.set_fault("bad_signature", op="entitlements")
        for _ in range(2):
            eng.sync_now()
            await env.settle()
        assert env.cloud.reports() == [] and env.cloud.requests("entitlements_report") == []
        assert [r.status for r in env.cloud.requests("entitlements")] == [200, 200, 304]
        assert eng.outbox.depth() == 0
    finally:
        await env.stop()
        await env.cloud.close()
    assert_contract(env.cloud)


async def test_without_navigation_destinations_wait_unacknowledged(env: Env) -> None:
    env.cloud.send_to_car(env.vin, "Gym", address="1 High Street")
    eng = await env.start()
    assert eng.pending_destinations() == 1 and env.cloud.effects_of("ack") == []
    assert "navigation" in eng.handoff_note
    env.nav = FakeNav()
    await env.advance(HOUR * 1.3)
    assert [d.query for d, _, _ in env.nav.accepted] == ["1 High Street"]
    assert len(env.cloud.effects_of("ack")) == 1


async def test_link_with_a_code_from_the_app(env: Env) -> None:
    eng = await env.start()
    eng.register()
    assert eng.link_account("wrong-1") == "pending"
    await env.settle()
    assert eng.link.state == "unlinked" and "invalid_code" in eng.link.reason
    code = env.cloud.app_code(env.vin)
    eng.link_account(code.lower())
    await env.settle()
    assert eng.link.state == "linked" and len(env.cloud.effects_of("link")) == 1


async def test_link_by_showing_a_code_the_driver_enters_in_the_app(env: Env) -> None:
    eng = await env.start()
    assert eng.link_account("") == "requesting-code"
    await env.settle()
    assert eng.link.state == "code-shown" and eng.link.uri == "https://example.com/link"
    assert env.cloud.enter_code(eng.link.code)
    await env.advance(6.0)  # the backend's poll interval
    assert eng.link.state == "linked"


async def test_restart_after_the_backend_acted_but_before_we_recorded_it(env: Env) -> None:
    await env.cloud.set_listener("old", "offline")
    eng = await env.start()
    eng.register()
    for i in range(5):
        eng.set_consent(f"c{i}", i % 2 == 0)
    await env.stop()  # power off with everything queued
    await env.cloud.set_listener("old", "up")
    env.cloud.set_fault("drop_response", op="consent", count=2)
    eng = await env.start(seed=2)
    await env.stop()  # killed again right after the first answers were lost
    eng = await env.start(seed=3)
    await env.advance(10.0)
    assert eng.outbox.depth() == 0 and eng.registration == "registered"
    assert len(env.cloud.effects_of("register")) == 1
    assert sorted(e.detail["name"] for e in env.cloud.effects_of("consent")) == [f"c{i}" for i in range(5)]
    assert any(r.replayed for r in env.cloud.requests("consent"))


async def test_offset_clock_jumps_fire_due_timers_at_once() -> None:
    import asyncio

    from dashbridge.daemon.clock import OffsetClock

    clock = OffsetClock()
    t0 = clock.now()
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep_until(t0 + 7 * DAY)
        woke.append(clock.now())

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    clock.advance(3 * DAY)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(5 * DAY)
    async with asyncio.timeout(2):
        await task
    assert woke and woke[0] >= t0 + 7 * DAY


async def test_registration_under_review_then_approved_and_asking_again_sends_nothing(tmp_path: Path) -> None:
    env = Env(tmp_path, auto_approve=False)
    await env.cloud.start()
    try:
        eng = await env.start()
        eng.register()
        await env.settle()
        assert (eng.registration, eng.registration_reason) == ("pending", "the backend is reviewing the registration")
        assert eng.register() == "pending"  # under review: no second request, only a sooner look
        await env.settle()
        assert len(env.cloud.requests("register")) == 1 and env.cloud.requests("status")
        env.cloud.approve(env.vin)
        await env.advance(1.3 * HOUR)  # the next scheduled sync reads the status
        assert eng.registration == "registered"
        assert len(env.cloud.requests("register")) == 1 and len(env.cloud.effects_of("register")) == 1
    finally:
        await env.stop()
        await env.cloud.close()
    assert_contract(env.cloud)


async def test_a_delivered_registration_the_backend_lost_is_sent_again(tmp_path: Path) -> None:
    env = Env(tmp_path, auto_approve=False)
    await env.cloud.start()
    try:
        eng = await env.start()
        eng.register()
        await env.settle()
        assert eng.registration == "pending" and len(env.cloud.effects_of("register")) == 1
        env.cloud.vehicles[env.vin].registration = "unregistered"  # a migration dropped the record
        env.cloud.auto_approve = True
        env.cloud.idempotency.clear()
        eng.sync_now()
        await env.settle()
        await env.advance(2.0)
        assert eng.registration == "registered"
        assert len(env.cloud.effects_of("register")) == 2  # the backend had nothing: one effect each
        assert env.cloud.vehicles[env.vin].registration == "registered"
    finally:
        await env.stop()
        await env.cloud.close()
    assert_contract(env.cloud)


def test_damaged_state_on_disk_never_stops_the_engine_from_starting() -> None:
    import random

    from dashbridge.daemon.clock import SimClock
    from dashbridge.daemon.cloud.engine import CloudEngine, EngineSettings
    from dashbridge.daemon.cloud.outbox import CloudDb

    db = CloudDb.memory()
    with db.transaction() as conn:
        for key, raw in (("registration", '"garbage"'), ("link", "[1, 2]"), ("consents", "{not json"),
                         ("last_sync", '"yesterday"'), ("last_rejection", '{"reason": 5, "at": "x"}'),
                         ("consent_seq", "null"), ("discovery", '"{\\"url\\": 1}"')):
            conn.execute("INSERT INTO cloud_state(key, value) VALUES(?, ?)", (key, raw))
        conn.execute("INSERT INTO cloud_entitlements(slot, jws, version, etag, received_at) "
                     "VALUES(1, 'not.a.jws', 3, '', 0)")
    eng = CloudEngine(EngineSettings(vehicle_id="V", base_url="https://x.example"), db, SimClock(), random.Random())
    assert (eng.registration, eng.link.state, eng.consents, eng.last_sync) == ("unregistered", "unlinked", {}, 0.0)
    assert eng.held is None and eng.lease.source == "offline-policy"
    eng.set_consent("a", True)  # and it still works
    assert eng.outbox.depth() == 1
