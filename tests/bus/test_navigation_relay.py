"""Navigation relay through org.dashbridge.Navigation1 on a real bus, with the fake navigation
service: offered -> accepted -> delivered exactly once; a service that is absent, errors or never
answers; expiry; restarts of the daemon and of the service; the cloud's accept_external path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.errors import BusError
from dashbridge.daemon.errors import InvalidInput
from dashbridge.daemon.services import Destination
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.navsvc import FakeNavigation

from .map_helpers import NAV_IFACE, MiniDaemon, Signals, api, make_config, prop

Factory = Callable[..., Awaitable[MiniDaemon]]
SHARD = Destination(label="The Shard", lat=51.5045, lon=-0.0865, confidence=1.0)


@pytest.fixture
async def mini(system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[Factory]:
    made: list[MiniDaemon] = []

    async def start(**nav: Any) -> MiniDaemon:
        base = {"retry_base": 0.05, "retry_max": 0.2, "delivery_timeout": 0.5}
        base.update(nav)
        cfg = make_config(tmp_path / "state", navigation=base)
        d = await MiniDaemon(system_bus.address, session_bus.address, tmp_path / "state", config=cfg,
                             messages=False).start()
        made.append(d)
        return d

    yield start
    for d in made:
        await d.stop()


@pytest.fixture
async def navsvc(system_bus: PrivateBus) -> AsyncIterator[FakeNavigation]:
    svc = FakeNavigation(system_bus.address)
    yield svc
    await svc.stop()


async def _offer(d: MiniDaemon, dest: Destination = SHARD, ref: str = "AA:BB:CC:00:00:01/7") -> str:
    assert d.nav is not None
    return await d.nav.offer(dest, source="message", source_ref=ref)


async def test_offer_accept_deliver_exactly_once(mini: Factory, navsvc: FakeNavigation, client: MessageBus) -> None:
    await navsvc.up()
    d = await mini()
    sig = await Signals(client).start()
    intent_id = await _offer(d)
    (offered,) = await sig.wait("IntentOffered")
    assert offered["id"] == intent_id and offered["label"] == "The Shard"
    assert offered["kind"] == "coordinates" and offered["latitude"] == pytest.approx(51.5045)
    assert offered["source"] == "message" and offered["source_ref"] == "AA:BB:CC:00:00:01/7"
    pending = await api(client, NAV_IFACE, "Pending")
    assert [p["id"] for p in pending] == [intent_id]
    assert navsvc.received == [], "nothing is delivered before the driver accepts"

    assert await api(client, NAV_IFACE, "Accept", "s", [intent_id]) == "accepted"
    await sig.wait("IntentChanged", lambda b: b[0] == intent_id and b[1] == "delivered")
    (got,) = navsvc.destinations
    assert got["id"] == intent_id and got["label"] == "The Shard" and got["kind"] == "coordinates"
    assert got["latitude"] == pytest.approx(51.5045) and got["longitude"] == pytest.approx(-0.0865)
    assert got["source"] == "message"
    # A second tap and the same destination offered again change nothing.
    assert await api(client, NAV_IFACE, "Accept", "s", [intent_id]) == "delivered"
    assert await _offer(d) == intent_id
    assert await api(client, NAV_IFACE, "Pending") == []
    assert len(navsvc.received) == 1


async def test_absent_service_waits_then_delivers_once_when_it_appears(
        mini: Factory, navsvc: FakeNavigation, client: MessageBus) -> None:
    d = await mini()
    sig = await Signals(client).start()
    first = await _offer(d)
    second = await _offer(d, Destination(label="", query="221B Baker Street, London NW1 6XE", confidence=0.5))
    await api(client, NAV_IFACE, "Accept", "s", [first])
    await api(client, NAV_IFACE, "Accept", "s", [second])
    assert await prop(client, NAV_IFACE, "ServiceAvailable") is False
    assert {p["state"] for p in await api(client, NAV_IFACE, "Pending")} == {"accepted"}

    await navsvc.up()  # the navigation service starts later
    await sig.wait("IntentChanged", lambda b: b[0] == second and b[1] == "delivered")
    assert [r["id"] for r in navsvc.destinations] == [first, second], "in acceptance order, once each"
    assert navsvc.destinations[1]["query"] == "221B Baker Street, London NW1 6XE"
    assert "latitude" not in navsvc.destinations[1]
    assert await prop(client, NAV_IFACE, "ServiceAvailable") is True

    # The service restarts: nothing is delivered twice.
    await navsvc.stop()
    await navsvc.up()
    third = await _offer(d, Destination(label="x", lat=48.85, lon=2.35))
    await api(client, NAV_IFACE, "Accept", "s", [third])
    await sig.wait("IntentChanged", lambda b: b[0] == third and b[1] == "delivered")
    assert [r["id"] for r in navsvc.destinations] == [first, second, third]


async def test_accepted_intent_survives_a_daemon_restart(mini: Factory, navsvc: FakeNavigation,
                                                         client: MessageBus) -> None:
    d = await mini()
    intent_id = await _offer(d)
    await api(client, NAV_IFACE, "Accept", "s", [intent_id])
    await d.stop()  # the car is switched off with the destination still queued

    d2 = await mini()
    sig = await Signals(client).start()
    assert [p["id"] for p in await api(client, NAV_IFACE, "Pending")] == [intent_id]
    await navsvc.up()
    await sig.wait("IntentChanged", lambda b: b[0] == intent_id and b[1] == "delivered")
    assert [r["id"] for r in navsvc.destinations] == [intent_id]
    assert d2.nav is not None and d2.nav.get(intent_id).state == "delivered"


async def test_service_error_keeps_the_intent_and_retries(mini: Factory, navsvc: FakeNavigation,
                                                         client: MessageBus) -> None:
    navsvc.set_mode("error")
    await navsvc.up()
    d = await mini()
    sig = await Signals(client).start()
    intent_id = await _offer(d)
    await api(client, NAV_IFACE, "Accept", "s", [intent_id])
    # Retried, not dropped: two failed attempts, each announced with the service's error.
    await sig.wait_count("IntentChanged", lambda b: b == [intent_id, "accepted", "Unavailable"], 2)
    pending = await api(client, NAV_IFACE, "GetIntent", "s", [intent_id])
    assert pending["state"] == "accepted" and pending["attempts"] >= 2

    navsvc.set_mode("ok")
    await sig.wait("IntentChanged", lambda b: b[0] == intent_id and b[1] == "delivered", timeout=5)
    assert {r["id"] for r in navsvc.destinations} == {intent_id}
    assert navsvc.received[-1].answered


async def test_service_that_never_answers_hits_the_deadline_and_is_retried(
        mini: Factory, navsvc: FakeNavigation, client: MessageBus) -> None:
    navsvc.set_mode("hang")
    await navsvc.up()
    d = await mini(delivery_timeout=0.3)
    sig = await Signals(client).start()
    intent_id = await _offer(d)
    await api(client, NAV_IFACE, "Accept", "s", [intent_id])
    await sig.wait("IntentChanged", lambda b: b[0] == intent_id and b[2] == "no answer", timeout=5)
    assert (await api(client, NAV_IFACE, "GetIntent", "s", [intent_id]))["state"] == "accepted"
    # The API stays responsive while a delivery call is hanging.
    assert await prop(client, NAV_IFACE, "PendingCount") == 1

    navsvc.set_mode("ok")
    await sig.wait("IntentChanged", lambda b: b[0] == intent_id and b[1] == "delivered", timeout=5)
    # Every call carried the same id, so a service that saw the unanswered one can drop the repeat.
    assert {r["id"] for r in navsvc.destinations} == {intent_id}
    assert navsvc.received[-1].answered and not navsvc.received[0].answered


async def test_intents_expire(mini: Factory, navsvc: FakeNavigation, client: MessageBus) -> None:
    d = await mini(intent_expiry=0.4)
    sig = await Signals(client).start()
    offered = await _offer(d)
    queued = await _offer(d, Destination(label="y", lat=40.0, lon=-3.7))
    await api(client, NAV_IFACE, "Accept", "s", [queued])
    await sig.wait("IntentChanged", lambda b: b[0] == offered and b[1] == "expired", timeout=5)
    await sig.wait("IntentChanged", lambda b: b[0] == queued and b[1] == "expired", timeout=5)
    assert await api(client, NAV_IFACE, "Pending") == []
    await navsvc.up()
    with pytest.raises(BusError) as err:
        await api(client, NAV_IFACE, "Accept", "s", [offered])
    assert err.value.name == "org.dashbridge.Error.Failed" and "expired" in err.value.text
    assert navsvc.received == [], "an expired destination is never delivered"


async def test_dismiss_and_bad_ids(mini: Factory, navsvc: FakeNavigation, client: MessageBus) -> None:
    await navsvc.up()
    d = await mini()
    sig = await Signals(client).start()
    intent_id = await _offer(d)
    await api(client, NAV_IFACE, "Dismiss", "s", [intent_id])
    await sig.wait("IntentChanged", lambda b: b == [intent_id, "dismissed", ""])
    with pytest.raises(BusError) as err:
        await api(client, NAV_IFACE, "Accept", "s", [intent_id])
    assert err.value.name == "org.dashbridge.Error.Failed"
    with pytest.raises(BusError) as err:
        await api(client, NAV_IFACE, "Accept", "s", ["0123456789abcdef"])
    assert err.value.name == "org.dashbridge.Error.NotFound"
    with pytest.raises(BusError) as err:
        await api(client, NAV_IFACE, "GetIntent", "s", ["../../etc"])
    assert err.value.name == "org.dashbridge.Error.InvalidArguments"
    assert navsvc.received == []


async def test_external_destinations_are_delivered_without_a_prompt_and_deduplicated(
        mini: Factory, navsvc: FakeNavigation, client: MessageBus) -> None:
    d = await mini()
    assert d.nav is not None
    sig = await Signals(client).start()
    dest = Destination(label="Office", lat=52.52, lon=13.405)
    a = await d.nav.accept_external(dest, source="cloud", source_ref="req-1")
    b = await d.nav.accept_external(dest, source="cloud", source_ref="req-1")  # the cloud retried
    assert a == b
    await navsvc.up()
    await sig.wait("IntentChanged", lambda body: body[0] == a and body[1] == "delivered")
    assert [r["id"] for r in navsvc.destinations] == [a]
    assert navsvc.destinations[0]["source"] == "cloud"
    assert sig.of("IntentOffered") == [], "send-to-car destinations were already chosen"


async def test_bad_destinations_are_refused(mini: Factory) -> None:
    d = await mini()
    assert d.nav is not None
    for bad in (Destination(label="x", lat=91.0, lon=0.0), Destination(label="x", lat=10.0, lon=None),
                Destination(label="x", lat=float("nan"), lon=1.0), Destination(label="nothing"),
                Destination(label="x", query="somewhere", confidence=2.0)):
        with pytest.raises(InvalidInput):
            await d.nav.offer(bad, source="message", source_ref="r")
    link = await d.nav.offer(Destination(label="Map link", query="https://maps.app.goo.gl/abc"), source="message",
                             source_ref="r")
    got = d.nav.get(link)
    assert got.kind == "link" and got.url == "https://maps.app.goo.gl/abc" and got.query == ""
