"""The fake backend itself, spoken to with a plain HTTPS client (not the daemon's): mutual TLS,
the idempotency store, versions, migration, and the HTTP control endpoint."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dashbridge.simulator.cloud import FakeCloud

from .cloud_contract import assert_contract

VIN = "WDB0000000DASH001"


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[FakeCloud]:
    c = FakeCloud(tmp_path / "cloud", (VIN, "OTHER000000000002"))
    await c.start()
    yield c
    await c.close()
    # These tests send malformed requests on purpose; the fake's answers must still be in contract.
    assert_contract(c, requests=False)


def _ctx(cloud: FakeCloud, vehicle: str | None = VIN) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cloud.ca.ca_file))
    if vehicle is not None:
        cert, key = cloud.client_certs[vehicle]
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def _req(cloud: FakeCloud, method: str, url: str, *, vehicle: str | None = VIN, body: Any = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.request(
            method, url, ssl=_ctx(cloud, vehicle), json=body, headers=headers or {}, allow_redirects=False) as r:
        return r.status, dict(r.headers), await r.read()


async def test_discovery_lists_v1_with_unknown_fields(cloud: FakeCloud) -> None:
    status, headers, body = await _req(cloud, "GET", f"{cloud.url}/.well-known/dashbridge")
    doc = json.loads(body)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert [a["version"] for a in doc["apis"]] == [1] and "motd" in doc


async def test_mutual_tls_identifies_the_vehicle(cloud: FakeCloud) -> None:
    url = f"{cloud.url}/v1/vehicles/{VIN}"
    assert (await _req(cloud, "GET", url))[0] == 200
    assert (await _req(cloud, "GET", url, vehicle="OTHER000000000002"))[0] == 403
    with pytest.raises(aiohttp.ClientError):
        await _req(cloud, "GET", url, vehicle=None)  # no client certificate: no TLS session


async def test_idempotency_store_replays_and_refuses_reuse(cloud: FakeCloud) -> None:
    url = f"{cloud.url}/v1/vehicles/{VIN}/consents/share"
    h = {"Idempotency-Key": "k1"}
    first = await _req(cloud, "PUT", url, body={"granted": True, "seq": 1}, headers=h)
    again = await _req(cloud, "PUT", url, body={"granted": True, "seq": 1}, headers=h)
    assert first[0] == again[0] == 200 and again[1].get("Idempotent-Replayed") == "true"
    assert len(cloud.effects_of("consent")) == 1
    reused = await _req(cloud, "PUT", url, body={"granted": False, "seq": 2}, headers=h)
    assert reused[0] == 422 and json.loads(reused[2])["error"]["code"] == "idempotency_key_reused"
    assert (await _req(cloud, "PUT", url, body={"granted": True, "seq": 3}))[0] == 400  # no key


async def test_an_old_cars_delivered_ack_counts_as_accepted_and_each_state_once(cloud: FakeCloud) -> None:
    did = cloud.send_to_car(VIN, "Office", lat=48.1, lon=11.5)
    url = f"{cloud.url}/v1/vehicles/{VIN}/destinations/{did}/ack"
    for key, result in (("a1", "delivered"), ("a2", "accepted"), ("a3", "shown"), ("a4", "shown")):
        status, _, _ = await _req(cloud, "POST", url, body={"id": did, "result": result, "reason": "",
                                                           "intent_id": "i"}, headers={"Idempotency-Key": key})
        assert status == 200
    assert [e.detail["result"] for e in cloud.acks(VIN)] == ["accepted", "shown"]
    listing = json.loads((await _req(cloud, "GET", f"{cloud.url}/v1/vehicles/{VIN}/destinations"))[2])
    assert listing["destinations"] == [] and listing["next"] is None


async def test_migration_redirects_then_gone(cloud: FakeCloud) -> None:
    await cloud.migrate("migrating")
    status, headers, _ = await _req(cloud, "GET", f"{cloud.url}/.well-known/dashbridge")
    assert status == 308 and headers["Location"].startswith(cloud.new.base)
    doc = json.loads((await _req(cloud, "GET", headers["Location"]))[2])
    assert {a["version"]: a["status"] for a in doc["apis"]} == {1: "deprecated", 2: "current"}
    status, headers, _ = await _req(cloud, "GET", f"{cloud.url}/v1/vehicles/{VIN}/entitlements")
    assert status == 308 and headers["Location"] == f"{cloud.new.base}/v1/vehicles/{VIN}/entitlements"
    await cloud.migrate("migrated")
    assert (await _req(cloud, "GET", f"{cloud.url}/v1/vehicles/{VIN}/entitlements"))[0] == 410
    assert (await _req(cloud, "GET", f"{cloud.new.base}/v1/vehicles/{VIN}/entitlements"))[0] == 410
    status, headers, body = await _req(cloud, "GET", f"{cloud.new.base}/v2/vehicles/{VIN}/entitlements")
    assert status == 200 and headers["Content-Type"] == "application/jose" and body.count(b".") == 2


async def test_control_endpoint_drives_faults_and_reports_state(cloud: FakeCloud) -> None:
    control = await cloud.start_control()
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{control}/fault", json={"mode": "status", "status": 503, "retry_after": "30",
                                                   "count": 1}) as r:
            assert r.status == 200
        async with s.post(f"{control}/send-to-car", json={"label": "Home", "lat": 51.5, "lon": -0.1}) as r:
            did = (await r.json())["id"]
        async with s.post(f"{control}/bogus", json={}) as r:
            assert r.status == 404
        async with s.post(f"{control}/fault", json={"mode": "status", "nonsense": 1}) as r:
            assert r.status == 400
    status, headers, _ = await _req(cloud, "GET", f"{cloud.url}/v1/vehicles/{VIN}/destinations")
    assert status == 503 and headers["Retry-After"] == "30"
    status, _, body = await _req(cloud, "GET", f"{cloud.url}/v1/vehicles/{VIN}/destinations")
    assert status == 200 and [d["id"] for d in json.loads(body)["destinations"]] == [did]
    async with aiohttp.ClientSession() as s, s.get(f"{control}/state") as r:
        state = await r.json()
    assert state["vehicles"][VIN]["destinations"][0]["label"] == "Home" and state["listeners"]["old"] == "up"
    async with aiohttp.ClientSession() as s, s.get(f"{control}/log") as r:
        log = await r.json()
    assert [e["status"] for e in log if e["op"] == "destinations"] == [503, 200]
