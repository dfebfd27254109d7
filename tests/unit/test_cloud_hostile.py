"""The car against a hostile backend (issue 14): answers cut into pieces and paced, over-size
bodies (chunked and declared), 100,000-deep JSON, missing documents and unknown vehicles, and the
headers every request must carry — the engine over real HTTPS with mutual TLS on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dashbridge.daemon.cloud.protocol import MAX_BODY_BYTES, JsonTooDeep, json_object, loads_bounded
from dashbridge.simulator.cloud import encode_json

from .cloud_contract import assert_contract
from .cloud_env import Env, FakeNav


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    await e.cloud.start()
    yield e
    await e.stop()
    await e.cloud.close()
    assert_contract(e.cloud)


def _engine_alive(env: Env) -> bool:
    return env._task is not None and not env._task.done()


def _destinations_body(env: Env) -> int:
    v = env.cloud.vehicles[env.vin]
    return len(encode_json({"destinations": [{k: x for k, x in d.items() if k not in ("acked", "states")}
                                              for d in v.destinations.values()],
                            "x-page": "unknown fields are ignored", "next": None}))


async def test_an_answer_in_two_writes_is_read_whole(env: Env) -> None:
    env.nav = FakeNav()
    ids = [env.cloud.send_to_car(env.vin, f"Stop {i}", lat=48.1, lon=11.5, address="a" * 150) for i in range(3)]
    # Pad the last address so the destinations answer is exactly 1,122 bytes, as in the field report.
    last = env.cloud.vehicles[env.vin].destinations[ids[-1]]
    last["address"] += "a" * (1122 - _destinations_body(env))
    assert _destinations_body(env) == 1122
    env.cloud.set_fault("pieces", cuts=[1024], op="destinations", count=1)
    eng = await env.start()
    [answer] = [r for r in env.cloud.requests("destinations")]
    assert len(answer.answer_body) == 1122 and answer.pieces == 2
    assert eng.backend_state == "online", eng.backend_reason
    assert [ref for _, _, ref in env.nav.accepted] == ids


async def test_a_catch_up_of_100_destinations_in_small_pieces_is_delivered_once(env: Env) -> None:
    env.nav = FakeNav()
    # About 84 KB: labels and addresses at their longest (200 and 500 characters).
    ids = [env.cloud.send_to_car(env.vin, f"Stop {i:03d} " + "l" * 191, lat=48.0 + i / 1000, lon=11.5,
                                 address=f"{i:03d} Long Road, " + "x" * 485, expires_at=env.clock.now() + 86400)
           for i in range(100)]
    env.cloud.set_fault("pieces", piece=1500, op="destinations", count=1)
    eng = await env.start()
    await env.advance(10.0)
    [first] = env.cloud.requests("destinations")[:1]
    assert len(first.answer_body) > 80_000 and first.pieces > 50, (len(first.answer_body), first.pieces)
    assert sorted(ref for _, _, ref in env.nav.accepted) == sorted(ids)  # every one, once
    acks = [e.detail["id"] for e in env.cloud.effects_of("ack")]
    assert sorted(acks) == sorted(ids)
    eng.sync_now()
    await env.settle()
    assert len(env.nav.accepted) == 100 and len(env.cloud.effects_of("ack")) == 100
    assert eng.backend_state == "online"


def _long_destinations(env: Env, n: int) -> list[str]:
    """``n`` destinations with label and address at their longest (about 840 bytes each)."""
    return [env.cloud.send_to_car(env.vin, f"Stop {i:04d} " + "l" * 190, lat=48.0 + i / 10000, lon=11.5,
                                  address=f"{i:04d} Long Road, " + "x" * 484, expires_at=env.clock.now() + 86400)
            for i in range(n)]


async def test_a_catch_up_of_500_destinations_in_one_page_in_small_pieces(env: Env) -> None:
    """Issue 14: the largest page the contract allows (about 420 KB), cut into 1,500-byte writes:
    every destination handed to navigation once and acknowledged ``accepted`` once."""
    env.nav = FakeNav()
    ids = _long_destinations(env, 500)
    env.cloud.set_fault("pieces", piece=1500, op="destinations", count=1)
    eng = await env.start()
    await env.advance(10.0)
    first = env.cloud.requests("destinations")[0]
    assert len(first.answer_body) > 400_000 and first.pieces > 250 and json.loads(first.answer_body)["next"] is None
    assert sorted(ref for _, _, ref in env.nav.accepted) == sorted(ids)
    assert sorted(e.detail["id"] for e in env.cloud.acks(result="accepted")) == sorted(ids)
    eng.sync_now()
    await env.settle()
    assert len(env.nav.accepted) == 500 and len(env.cloud.acks()) == 500
    assert eng.backend_state == "online"


async def test_a_catch_up_of_1200_destinations_follows_next_over_three_pages(env: Env) -> None:
    """1,200 waiting, 500 a page: one sync reads three pages (following ``next``), nothing is
    dropped, each destination is handed over and acknowledged exactly once."""
    env.nav = FakeNav()
    env.clock.settle_timeout = 120.0  # 1,200 acknowledgements over real HTTPS before it is idle
    ids = _long_destinations(env, 1200)
    env.cloud.set_fault("pieces", piece=4096, op="destinations", count=3)
    eng = await env.start()
    await env.advance(30.0)
    pages = env.cloud.requests("destinations")[:3]
    assert [len(json.loads(p.answer_body)["destinations"]) for p in pages] == [500, 500, 200]
    assert [bool(p.query) for p in pages] == [False, True, True]  # the 2nd and 3rd carry ?cursor=
    assert json.loads(pages[2].answer_body)["next"] is None
    assert sorted(ref for _, _, ref in env.nav.accepted) == sorted(ids)
    acks = [e.detail["id"] for e in env.cloud.acks(result="accepted")]
    assert len(acks) == 1200 and sorted(acks) == sorted(ids)
    eng.sync_now()
    await env.settle()
    assert len(env.nav.accepted) == 1200 and len(env.cloud.acks()) == 1200
    assert json.loads(env.cloud.requests("destinations")[-1].answer_body)["destinations"] == []


async def test_a_backend_without_paging_still_works(tmp_path: Path) -> None:
    """v1 compatibility: a backend that never sends ``next`` (and lists at most its page size):
    the car takes each answer as the last page; what is left comes once the first are acked."""
    env = Env(tmp_path, paging=False, page_size=40)
    await env.cloud.start()
    try:
        env.nav = FakeNav()
        ids = [env.cloud.send_to_car(env.vin, f"Stop {i}", address=f"{i} Road") for i in range(100)]
        eng = await env.start()
        await env.advance(10.0)
        assert len(env.nav.accepted) == 40
        for _ in range(3):
            eng.sync_now()
            await env.settle()
        assert sorted(ref for _, _, ref in env.nav.accepted) == sorted(ids)
        assert len(env.cloud.acks(result="accepted")) == 100
        assert all("next" not in json.loads(r.answer_body) for r in env.cloud.requests("destinations"))
    finally:
        await env.stop()
        await env.cloud.close()
    assert_contract(env.cloud)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_a_2_mib_answer_is_refused_as_too_large(env: Env, chunked: bool) -> None:
    eng = await env.start()
    env.cloud.set_fault("oversize", size=2 * MAX_BODY_BYTES, chunked=chunked, op="destinations", count=1)
    eng.sync_now()
    await env.settle()
    assert eng.backend_state == "degraded" and "too large" in eng.backend_reason, eng.backend_reason
    assert "not valid JSON" not in eng.backend_reason
    if not chunked:
        assert "Content-Length" in eng.backend_reason  # refused before reading the body
    assert _engine_alive(env)
    eng.sync_now()
    await env.settle()
    assert eng.backend_state == "online"


@pytest.mark.parametrize(("op", "status", "version"), [
    ("entitlements", 0, 1), ("destinations", 0, 1), ("discovery", 0, 1), ("status", 500, 1),
    ("entitlements", 0, 2),  # the JWS header, read before the signature is checked
], ids=["entitlements-json", "destinations", "discovery", "error-body", "jws-header"])
async def test_100000_deep_nesting_is_a_protocol_error_and_the_engine_stays_up(
        env: Env, op: str, status: int, version: int) -> None:
    if version == 2:
        await env.cloud.migrate("migrated")
    depth = 20_000 if op == "entitlements" and version == 2 else 100_000  # a JWS is capped at 64 KiB
    eng = await env.start()
    assert eng.client is not None and eng.client.version == version
    env.cloud.set_fault("deep_nesting", depth=depth, status=status, op=op, count=1)
    if op == "discovery":
        eng.client.discovery = None  # make the next sync read discovery again
    if op == "status":
        eng._status_due = True
    eng.sync_now()
    await env.settle()
    assert _engine_alive(env)
    assert env.cloud.requests(op)[-1].fault == "deep_nesting"
    assert eng.backend_state == "degraded", (eng.backend_state, eng.backend_reason)
    if status:
        assert "HTTP 500" in eng.backend_reason
    elif version == 2:
        assert "(malformed)" in eng.backend_reason and "nested deeper than 64" in eng.backend_reason
    else:
        assert "nested deeper than 64" in eng.backend_reason
    eng.sync_now()  # and it recovers on the next good answer
    await env.settle()
    assert _engine_alive(env) and eng.backend_state == "online"


async def test_every_request_carries_the_api_version_discovery_included(env: Env) -> None:
    eng = await env.start()
    eng.set_consent("share_location", True)
    await env.settle()
    assert [r.op for r in env.cloud.log][:1] == ["discovery"]
    for r in env.cloud.log:
        assert r.request_headers.get("Dashbridge-Api-Version") in ("1", "2"), (r.op, r.request_headers)
        assert r.request_headers.get("User-Agent", "").startswith("dashbridge")
    [disc] = env.cloud.requests("discovery")
    assert disc.request_headers["Dashbridge-Api-Version"] == "2"  # the highest this car speaks


async def test_after_rediscovery_to_v2_the_entitlements_request_asks_for_jose(env: Env) -> None:
    eng = await env.start()
    assert eng.client is not None and eng.client.version == 1
    await env.cloud.migrate("migrated")  # v1 answers 410 now: the next request rediscovers
    eng.sync_now()
    await env.settle()
    assert eng.client.version == 2 and eng.backend_state == "online"
    v2 = [r for r in env.cloud.requests("entitlements") if r.version == 2]
    assert v2 and v2[0].request_headers["Accept"] == "application/jose"
    assert all(r.request_headers["Accept"] == "application/json" for r in env.cloud.requests("entitlements")
               if r.version == 1)


async def test_no_document_yet_is_not_a_moved_endpoint(env: Env) -> None:
    eng = await env.start()
    n_disc = len(env.cloud.requests("discovery"))
    env.cloud.set_fault("missing_document", op="entitlements", count=1)
    eng.sync_now()
    await env.settle()
    assert [r.status for r in env.cloud.requests("entitlements")][-1] == 404
    assert len(env.cloud.requests("discovery")) == n_disc  # no rediscovery
    assert eng.backend_state == "online" and eng.held is not None and eng.lease.source == "cached"
    eng.sync_now()
    await env.settle()
    assert eng.lease.source == "backend"


async def test_unknown_vehicle_is_not_a_moved_endpoint(env: Env) -> None:
    eng = await env.start()
    n_disc = len(env.cloud.requests("discovery"))
    env.cloud.set_fault("unknown_vehicle", op="entitlements", count=1)
    eng.sync_now()
    await env.settle()
    assert len(env.cloud.requests("discovery")) == n_disc
    assert eng.backend_state == "degraded" and "unknown_vehicle" in eng.backend_reason


async def test_an_ack_for_an_unknown_destination_is_not_retried(env: Env) -> None:
    env.nav = FakeNav(fail=1)  # the first hand-off fails: the ack goes out on a later turn
    did = env.cloud.send_to_car(env.vin, "Office", lat=48.1, lon=11.5)
    eng = await env.start()
    assert env.nav.accepted == []
    del env.cloud.vehicles[env.vin].destinations[did]  # the backend forgot it meanwhile
    await env.advance(1800.0)
    assert [ref for _, _, ref in env.nav.accepted] == [did]
    assert [r.status for r in env.cloud.requests("ack")] == [404]  # 404 unknown_destination, once
    assert len(env.cloud.requests("discovery")) == 1  # not taken for a moved endpoint
    assert eng.backend_state == "online" or "unknown_destination" in eng.backend_reason


def test_loads_bounded_refuses_deep_json_without_recursion_error() -> None:
    for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 65 + "1" + "}" * 65):
        with pytest.raises(JsonTooDeep):
            loads_bounded(text)
    assert loads_bounded('{"a":' * 63 + "1" + "}" * 63) is not None
    assert loads_bounded("7") == 7
    with pytest.raises(Exception, match="not usable JSON"):
        json_object(("[" * 100_000).encode(), "answer")
    assert json.loads(encode_json({"a": 1})) == {"a": 1}


def test_the_openapi_document_is_valid_and_covers_every_endpoint() -> None:
    from openapi_spec_validator import validate

    from dashbridge.daemon.cloud.protocol import ENDPOINT_NAMES

    from .cloud_contract import operations, spec

    validate(spec())
    ids = {op.op_id for op in operations()}
    per_endpoint = {"registration": "register", "status": "getStatus", "account_link": "linkAccount",
                    "link_code": "requestLinkCode", "entitlements": "getEntitlements",
                    "destinations": "getDestinations", "destination_ack": "ackDestination", "consent": "setConsent",
                    "entitlements_report": "reportEntitlements"}
    assert set(per_endpoint) == set(ENDPOINT_NAMES)
    for name, stem in per_endpoint.items():
        assert any(i.startswith(stem) and i.endswith("V1") for i in ids), name
        assert any(i.startswith(stem) and i.endswith("V2") for i in ids), name
    assert "getDiscovery" in ids
    schemas = spec()["components"]["schemas"]
    assert {"EntitlementsJwsHeader", "EntitlementClaims", "Error", "ErrorCode"} <= set(schemas)
