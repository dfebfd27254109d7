"""Interoperability: the independent phone app (phone_app.py, written from docs/ble-companion.md
alone) on a virtual phone in the simulator, instead of the built-in one, against the REAL
``dashbridged`` (its car side uses the real ``bleak`` over the fake BlueZ on a private D-Bus).

* A bonded, connected phone with one destination: the dashboard is offered it with source
  ``companion`` (§4), the app sees it acknowledged and no longer pending (§5).
* A lease signed by the world's reference backend, served in several chunks (§3, §6): it reaches
  the car while the backend is away; ``Cloud1.EntitlementsVersion`` rises and ``Cloud1.Features``
  shows the source ``companion``.

Also: a bad field rejected with a reason (§5, §8); an acknowledgement lost with the link, or held
while the car's daemon restarts, is repeated without a second offer (§5); a lease replaced during
the car's read is read again (§3); the minimum MTU (23) and 503-byte chunks over a smaller MTU (§3);
a daemon killed mid-document over a link that stays up (§3: the selection outlives the process).

Every wait is for a condition under a deadline (the app pokes an event on every GATT request;
the dashboard records the daemon's signals).

Findings (docs/ble-companion.md against the car and the simulator; nothing was changed there):

* §3 "Selecting a chunk": the selection is per *connection*, and the car's read starts with a plain
  read.  A car daemon restarted while bluetoothd keeps the LE link finds the old process's
  selection (here chunk 2) on its first read.  The car copes (it writes 0 and reads again), but
  the document does not say that the car resets the selection itself when the first frame is not
  chunk 0; nor does it say what a phone should do (the selection cannot be tied to the process).
* §3 "Notifications": the header's ``count`` depends on the chunk size, which §3 derives from a
  link's MTU, but a notification goes to every subscribed car (and the simulator's ``notify``
  takes no link): which MTU counts?  The car only compares ``crc``, so it is harmless.
* §3: reads with an offset (Read Blob, when a frame is longer than ATT_MTU-1) are not mentioned;
  a phone must serve the same frame from the offset.  The fake BlueZ does not model Read Blob: it
  passes the app only the D-Bus ReadValue offset and returns the whole value.
* §3 "reads the document again when the crc differs": after ONE lease notification the car
  sometimes reads the whole lease twice (log "accepted (version 2)" then "held (version 2 is
  already held)"); timing-dependent (1 run in 3).  Possibly the PropertiesChanged(Value) BlueZ
  emits for the car's own reads (full frames, not 9-byte headers) taken as notifications.
* §4: the table does not say which fields are required.  The car rejects a destination without
  ``created`` ("created is not an RFC 3339 time") or without ``label`` ("label missing").
* §5: how the phone answers a malformed acknowledgement (not JSON, over 512 bytes) is not said.
* §7.2 lists "reads the version, the lease, the destinations, acknowledges, and subscribes"; the
  car subscribes right after the version read, before reading the documents (better; the phone
  must expect notifications to be enabled during the first reads).
* §1: "every characteristic MUST require an encrypted, bonded link" cannot be expressed through the
  simulator's GattApp interface (no link security is passed; flags are client-side properties)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.world import Event, World, WorldSpec

from .phone_app import ACK, DESTINATIONS, LEASE, VERSION, IndependentCompanionApp

pytest.importorskip("bleak")

ADDR = "AA:BB:CC:DD:EE:31"
DEADLINE_S = 30.0
MTU = 185  # a common phone MTU: chunks of 175 bytes, so a signed lease takes several


class WatchedApp(IndependentCompanionApp):
    """The app plus an event poked on every GATT request, so a test can wait for the app's state."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.poked = asyncio.Event()
        self.requests: list[tuple[str, int, str]] = []
        # fault hooks a test sets: called before a request is served (may raise AttError/LinkLost)
        self.before_read: Callable[[int, str], None] | None = None
        self.before_write: Callable[[int, str, bytes], None] | None = None
        # while set: an acknowledgement write is never served (the phone app hangs before it
        # processes it); the write's answer is held until ``release`` is set
        self.hold_acks = False
        self.held_acks: list[bytes] = []
        self.release = asyncio.Event()

    def _poke(self) -> None:
        self.poked.set()

    def read(self, link: int, uuid: str, offset: int = 0, mtu: int = 23) -> bytes:
        self.requests.append(("read", link, uuid))
        try:
            if self.before_read is not None:
                self.before_read(link, uuid)
            return super().read(link, uuid, offset, mtu)
        finally:
            self._poke()

    def write(self, link: int, uuid: str, value: bytes) -> Awaitable[None] | None:  # type: ignore[override]
        self.requests.append(("write", link, uuid))
        if self.hold_acks and uuid == ACK:
            self.held_acks.append(bytes(value))
            self._poke()
            return self.release.wait()  # type: ignore[return-value]
        try:
            if self.before_write is not None:
                self.before_write(link, uuid, value)
            super().write(link, uuid, value)
        finally:
            self._poke()

    async def until(self, cond: Callable[[], bool], timeout: float = DEADLINE_S, what: str = "") -> None:
        try:
            async with asyncio.timeout(timeout):
                while not cond():
                    self.poked.clear()
                    await self.poked.wait()
        except TimeoutError:
            raise AssertionError(f"not within {timeout} s: {what}; app requests so far: {self.requests[-20:]}") \
                from None


async def dash_until(world: World, cond: Callable[[], Awaitable[bool]], what: str,
                     timeout: float = DEADLINE_S) -> None:
    """Re-check ``cond`` (a D-Bus read) whenever the daemon signals something, under a deadline."""
    dash = world.dashboard
    assert dash is not None
    try:
        async with asyncio.timeout(timeout):
            while not await cond():
                await dash.changed()
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


def _is(ev: Event, short: str) -> bool:
    return ev.short == short


@pytest.fixture
async def app() -> WatchedApp:
    return WatchedApp()


@pytest.fixture
def mtu() -> int:
    return MTU


@asynccontextmanager
async def _world(app: WatchedApp, mtu: int = MTU, **spec: Any) -> AsyncIterator[World]:
    """Alice's bonded phone running ``app``, in a started world (``spec``: more of its WorldSpec)."""
    phone = VirtualPhone(ADDR, name="Alice's Pixel", bonded=True, companion=app, att_mtu=mtu)
    w = World(WorldSpec(phones=[phone], **spec))
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture
async def world(app: WatchedApp, mtu: int) -> AsyncIterator[World]:
    async with _world(app, mtu, backend={"auto_approve": True}) as w:
        yield w


async def test_a_destination_picked_in_the_app_is_offered_as_companion_and_acknowledged(
        app: WatchedApp) -> None:
    dest = app.add_destination("Grandma's", lat=51.50135, lon=-0.14189)
    async with _world(app, navigation={"running": True}) as w:
        dash = w.dashboard
        assert dash is not None
        ev = await dash.wait_for(lambda e: _is(e, "Navigation1.IntentOffered")
                                 and e.named["intent"].get("source") == "companion", DEADLINE_S)
        intent = ev.named["intent"]
        assert intent["label"] == "Grandma's" and intent["kind"] == "coordinates"
        assert intent["latitude"] == pytest.approx(51.50135) and intent["longitude"] == pytest.approx(-0.14189)
        assert intent["source_ref"] == f"{ADDR}/{dest}", "Navigation1.md: <phone address>/<the app's id>"

        await app.until(lambda: dest in app.acknowledged_ids(), what="the car acknowledges the destination")
        assert app.pending_ids() == [] and app.rejected_ids() == {}
        # The car read the version first, and the destinations over a link the app was told of.
        kinds = [(op, uuid) for op, _, uuid in app.requests]
        assert kinds[0] == ("read", VERSION)
        assert ("read", DESTINATIONS) in kinds and ("write", ACK) in kinds
        assert app.links_up, "the fake told the app of the car's link"

        # Offered once: the driver accepts it, the navigation service gets it exactly once.
        assert await dash.call("Navigation1.Accept", [intent["id"]]) in ("accepted", "delivered")
        await dash.wait_for(lambda e: _is(e, "Navigation1.IntentChanged") and e.named["intent_id"] == intent["id"]
                            and e.named["state"] == "delivered", DEADLINE_S)
        offers = [e for e in dash.events if _is(e, "Navigation1.IntentOffered")]
        assert len(offers) == 1, [e.describe() for e in offers]
        assert [d["label"] for d in w.fake("navigation").destinations] == ["Grandma's"]


@pytest.mark.parametrize("mtu", [MTU, 23], ids=["mtu185", "mtu23-minimum"])
async def test_a_multi_chunk_lease_from_the_reference_backend_reaches_the_car_through_the_app(
        app: WatchedApp, world: World, mtu: int) -> None:
    dash = world.dashboard
    assert dash is not None

    async def version() -> int:
        return int(await dash.get("Cloud1.EntitlementsVersion"))

    await dash_until(world, lambda: _ge(version(), 1), "the car synced a first lease from the backend")
    held = await version()
    # The car has subscribed to the lease on its session with the phone (it reads it on connecting).
    await app.until(lambda: any(op == "read" and uuid == LEASE for op, _, uuid in app.requests),
                    what="the car reads the (empty) lease on connecting")

    backend = world.fake("backend")
    await backend.set_listener("old", "offline")  # the backend is away: only the phone can bring it
    new_version = backend.issue_entitlements(world.vehicle_id)
    jws = str(backend.vehicles[world.vehicle_id].ent_jws)
    assert new_version > held and len(jws) > mtu - 10, "the lease needs more than one chunk"
    mark = len(app.reads)
    app.set_lease(jws)  # the app fetched it for this car and now notifies its header

    await dash_until(world, lambda: _eq(version(), new_version), "the relayed lease is held")
    features = await dash.get("Cloud1.Features")
    sources = {name: f[1] for name, f in features.items()}
    assert "companion" in sources.values(), sources
    assert await dash.get("Cloud1.EntitlementsSource") == "companion"
    # Served in chunks: every chunk of the lease was read on one link after the notification.
    count = -(-len(jws) // (mtu - 10))
    lease_reads = [(link, i, c) for link, uuid, i, c in app.reads[mark:] if uuid == LEASE]
    assert count >= 2 and any(c == count for _, _, c in lease_reads), lease_reads
    links = {link for link, _, c in lease_reads if c == count}
    assert any({i for lk, i, c in lease_reads if lk == link and c == count} == set(range(count)) for link in links)


async def _ge(x: Awaitable[int], n: int) -> bool:
    return await x >= n


async def _eq(x: Awaitable[int], n: int) -> bool:
    return await x == n


async def test_a_destination_with_a_bad_field_is_rejected_with_a_reason_and_the_others_taken(
        app: WatchedApp) -> None:
    good = app.add_destination("Dentist", address="12 High Street, Bath BA1 1AA", id="b2")
    # served as it is (the app's own checks bypassed): lat out of range (§4, §8)
    bad = app.add_destination("Nowhere", id="x9", extra={"lat": 95.0, "lon": 0.0})
    async with _world(app) as w:
        dash = w.dashboard
        assert dash is not None
        await app.until(lambda: not app.pending_ids(), what="both ids acknowledged or rejected")
        assert app.acknowledged_ids() == [good]
        rejected = app.rejected_ids()
        assert list(rejected) == [bad] and 0 < len(rejected[bad]) <= 100, rejected
        offers = [e.named["intent"] for e in dash.events if _is(e, "Navigation1.IntentOffered")]
        assert [(i["label"], i["kind"], i.get("query"), i["source"]) for i in offers] == [
            ("Dentist", "query", "12 High Street, Bath BA1 1AA", "companion")]


async def test_an_acknowledgement_lost_with_the_link_is_repeated_and_nothing_is_offered_twice(
        app: WatchedApp) -> None:
    from dashbridge.simulator.companion import LinkLost

    dest = app.add_destination("Grandma's", lat=51.50135, lon=-0.14189)
    lost: list[int] = []

    def drop_first_ack(link: int, uuid: str, value: bytes) -> None:
        if uuid == ACK and not lost:
            lost.append(link)
            raise LinkLost("the phone walks out of range as the car acknowledges")

    app.before_write = drop_first_ack
    async with _world(app) as w:
        dash = w.dashboard
        assert dash is not None
        await app.until(lambda: bool(lost), what="the car writes its first acknowledgement")
        assert app.pending_ids() == [dest], "a lost acknowledgement leaves the id listed (§5)"
        await dash.wait_for(lambda e: _is(e, "Navigation1.IntentOffered"), DEADLINE_S)

        # The link is gone (the daemon sees the phone disconnect); then the phone comes back.
        await until_either(w, app, lambda: dest in app.acknowledged_ids() or not w.phone_state(ADDR)["connected"],
                           "the link drops")
        if dest not in app.acknowledged_ids() and not w.phone_state(ADDR)["connected"]:
            assert await w.phone_connect(ADDR), "the phone reconnects"
        await app.until(lambda: dest in app.acknowledged_ids(), what="the car acknowledges again")
        assert app.pending_ids() == []
        assert len({link for op, link, uuid in app.requests if uuid == ACK}) >= 2, "acked on a new link"
        offers = [e for e in dash.events if _is(e, "Navigation1.IntentOffered")]
        assert len(offers) == 1, [e.describe() for e in offers]
        pending = await dash.call("Navigation1.Pending")
        assert [p["source_ref"] for p in pending] == [f"{ADDR}/{dest}"]


async def until_either(world: World, app: WatchedApp, cond: Callable[[], bool], what: str,
                       timeout: float = DEADLINE_S) -> None:
    """Re-check ``cond`` whenever the daemon signals something or the app serves a request."""
    dash = world.dashboard
    assert dash is not None
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                app.poked.clear()
                waits = [asyncio.ensure_future(dash.changed()), asyncio.ensure_future(app.poked.wait())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for f in waits:
                        f.cancel()
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}; app requests: {app.requests[-20:]}") from None


async def test_a_lease_replaced_during_the_cars_read_is_read_again_from_chunk_zero(
        app: WatchedApp, world: World) -> None:
    dash = world.dashboard
    assert dash is not None

    async def version() -> int:
        return int(await dash.get("Cloud1.EntitlementsVersion"))

    await dash_until(world, lambda: _ge(version(), 1), "the car synced a first lease from the backend")
    await app.until(lambda: any(uuid == LEASE for _, _, uuid in app.requests), what="lease read on connecting")
    backend = world.fake("backend")
    await backend.set_listener("old", "offline")
    vid = world.vehicle_id
    first = backend.issue_entitlements(vid)
    first_jws = str(backend.vehicles[vid].ent_jws)
    newer = backend.issue_entitlements(vid)
    newer_jws = str(backend.vehicles[vid].ent_jws)
    swapped: list[int] = []

    def swap_mid_read(link: int, uuid: str) -> None:
        # The app fetches a newer lease while the car is between chunk 0 and chunk 1 of the first.
        if uuid == LEASE and not swapped and app._selected.get((link, LEASE), 0) == 1 \
                and app.document(LEASE) == first_jws.encode():
            swapped.append(link)
            app.set_lease(newer_jws)

    app.before_read = swap_mid_read
    app.set_lease(first_jws)
    await dash_until(world, lambda: _eq(version(), newer), "the newer lease is held")
    assert swapped, "the lease really changed during the car's read"
    assert first < newer and await dash.get("Cloud1.EntitlementsSource") == "companion"
    rejection = await dash.get("Cloud1.LastRejection")
    assert not rejection[0], f"nothing was rejected: {rejection}"


async def test_frames_longer_than_the_mtu_are_long_read_by_the_car() -> None:
    """§3: the phone SHOULD cut chunks to the MTU, but the car accepts any n up to 503 (BlueZ
    long-reads a longer value): a phone serving 503-byte chunks over an MTU of 185.  NB: the fake
    BlueZ hands the app the D-Bus ReadValue offset only (0 here) and returns the whole value; it
    does not model the Read Blob requests a real BlueZ would send the phone, so the app's offset
    handling is covered by the unit tests only."""
    app = WatchedApp(fixed_chunk=503)
    dest = app.add_destination("Y" * 190, address="Z" * 290)
    assert len(app.document(DESTINATIONS)) > 503, "two chunks of 503"
    async with _world(app) as w:
        dash = w.dashboard
        assert dash is not None
        ev = await dash.wait_for(lambda e: _is(e, "Navigation1.IntentOffered"), DEADLINE_S)
        assert ev.named["intent"]["query"] == "Z" * 290 and ev.named["intent"]["label"] == "Y" * 190
        await app.until(lambda: dest in app.acknowledged_ids(), what="acknowledged")
        assert {(i, c) for _, uuid, i, c in app.reads if uuid == DESTINATIONS and c == 2} == {(0, 2), (1, 2)}


async def test_a_daemon_restarted_before_its_acknowledgement_reached_the_phone_offers_nothing_twice(
        app: WatchedApp) -> None:
    """§5: the car stored the destination, then its daemon restarts before the phone got the
    acknowledgement: the phone still lists the id; the new daemon finds it stored, acknowledges it
    again, and the dashboard is not offered it a second time."""
    dest = app.add_destination("Grandma's", lat=51.50135, lon=-0.14189)
    app.hold_acks = True
    phone = VirtualPhone(ADDR, name="Alice's Pixel", bonded=True, companion=app, att_mtu=MTU)
    w = World(WorldSpec(phones=[phone]))
    await w.start()
    try:
        dash = w.dashboard
        assert dash is not None
        ev = await dash.wait_for(lambda e: _is(e, "Navigation1.IntentOffered"), DEADLINE_S)
        intent_id = ev.named["intent"]["id"]
        await app.until(lambda: bool(app.held_acks), what="the car sends its acknowledgement")
        assert app.pending_ids() == [dest]

        app.hold_acks = False  # the first acknowledgement stays unanswered and unprocessed
        mark = dash.mark
        await w.restart_daemon()
        await app.until(lambda: dest in app.acknowledged_ids(), what="the new daemon acknowledges the id")
        assert app.pending_ids() == []
        offers = [e for e in dash.events[mark:] if _is(e, "Navigation1.IntentOffered")]
        assert offers == [], [e.describe() for e in offers]
        pending = await dash.call("Navigation1.Pending")
        assert [(p["id"], p["source"]) for p in pending] == [(intent_id, "companion")]
    finally:
        app.release.set()
        await w.stop()


class HoldingApp(WatchedApp):
    """Holds the answer to every destinations read once the car has selected ``hold_at``: the car's
    daemon can be killed in the middle of a document."""

    def __init__(self, hold_at: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.hold_at = hold_at
        self.holding = False
        self.held_reads = 0
        self.let_go = asyncio.Event()
        self.served: list[tuple[int, int]] = []  # (link, index) of every destinations frame served

    def read(self, link: int, uuid: str, offset: int = 0, mtu: int = 23) -> Any:
        value = super().read(link, uuid, offset, mtu)
        if uuid == DESTINATIONS:
            self.served.append((link, value[1] | value[2] << 8))
            if self.holding:
                self.held_reads += 1
                self._poke()

                async def later() -> bytes:
                    await self.let_go.wait()
                    return value
                return later()
        return value

    def write(self, link: int, uuid: str, value: bytes) -> Any:
        if uuid == DESTINATIONS and value == self.hold_at.to_bytes(2, "little") and not self.let_go.is_set():
            self.holding = True
        return super().write(link, uuid, value)


async def test_a_daemon_killed_mid_document_over_a_link_that_stays_up_still_gets_every_destination_once() -> None:
    """The car's daemon dies after selecting chunk 2 of the destinations; the LE link (and with it
    the phone's per-link selection, §3) survives in bluetoothd.  The new daemon's first read is
    answered with chunk 2, not 0; it must start again from chunk 0 and take every destination once."""
    app = HoldingApp(hold_at=2)
    ids = [app.add_destination(f"Place {i}", lat=51.0 + i / 100, lon=-0.1, id=f"p{i}") for i in range(3)]
    phone = VirtualPhone(ADDR, name="Alice's Pixel", bonded=True, companion=app, att_mtu=40)  # 30-byte chunks
    w = World(WorldSpec(phones=[phone]))
    await w.start()
    try:
        dash = w.dashboard
        assert dash is not None
        await app.until(lambda: app.held_reads > 0, what="the car reads chunk 2")
        links_before = {link for link, _ in app.served}
        app.holding = False
        await w.restart_daemon(kill=True)
        app.let_go.set()
        await app.until(lambda: not app.pending_ids(), what="the new daemon takes every destination")
        assert app.acknowledged_ids() == ids
        first_after = app.served[app.served.index((next(iter(links_before)), 2)) + 1]
        assert first_after == (next(iter(links_before)), 2), \
            f"precondition: the link stayed up and the new daemon's first read got chunk 2 ({app.served})"
        offers = [e.named["intent"]["label"] for e in dash.events if _is(e, "Navigation1.IntentOffered")]
        assert sorted(offers) == ["Place 0", "Place 1", "Place 2"]
    finally:
        app.let_go.set()
        await w.stop()
