"""The driver's phone as a courier over Bluetooth LE (docs/ble-companion.md), car side.

For every **bonded** phone that is connected (the phone directory lists only phones paired with
this car) and offers the companion service, one session with ``bleak`` as the GATT client on
BlueZ: read the protocol version, the lease (handed to the cloud's entitlement engine, which
verifies it like the backend's), the pending destinations (offered on the dashboard through the
navigation relay, then acknowledged), and subscribe to both documents' notifications until the
phone goes.  A device that is not bonded and offers or advertises the service is ignored, with one
log line per device and run.

Every wait has a deadline (``companion.*`` in the config).  A destination is acknowledged only
after the relay stored it, and stored once per (phone, id): a link lost or a daemon restarted at
any point loses nothing and offers nothing twice (docs/ble-companion.md §5).

``bleak`` is optional (the ``ble`` extra): without it the component says it is unavailable in
``Daemon1.Health`` and the rest of the daemon runs as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from dbus_fast import Message

from ..backoff import Backoff
from ..context import AppContext
from ..dbus import names
from ..logs import redact_address
from ..phones import Event, PhoneLink, follow
from ..services import Destination
from .protocol import (
    ACK_UUID,
    DESTINATIONS_UUID,
    LEASE_UUID,
    MAJOR,
    MAX_DESTINATIONS_BYTES,
    MAX_LEASE_BYTES,
    SERVICE_UUID,
    VERSION_UUID,
    DocumentChanged,
    Frame,
    ProtocolError,
    ack_writes,
    check_size,
    parse_destinations,
    parse_frame,
    select,
    whole,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SOURCE = "companion"  # the navigation relay's source and the entitlement engine's courier
READ_ATTEMPTS = 3  # a document that changes under the read this often waits for the next notification


class SessionEnded(Exception):
    """The session is over for now (the phone went, or something failed): try again later."""


def bleak_available() -> bool:
    return importlib.util.find_spec("bleak") is not None


class CompanionComponent:
    name = "companion"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.companion
        self.phones = ctx.services.phones
        self._events: asyncio.Queue[tuple[Event, PhoneLink]] = asyncio.Queue()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ignored: set[str] = set()  # not-bonded devices already logged
        self._bond: dict[str, dict[str, bool]] = {}  # device path -> Bonded/Paired as BlueZ last said
        self._rng = random.Random()
        self.phones.add_listener(lambda ev, link: self._events.put_nowait((ev, link)))

    # -- component ---------------------------------------------------------------------------------
    async def run(self) -> None:
        if not self.cfg.enabled:
            self.ctx.health.set(self.name, "ok", "disabled (companion.enabled is false)")
            return
        if not bleak_available():
            self.ctx.health.set(self.name, "degraded",
                                "unavailable: bleak is not installed (the dashbridge[ble] extra)")
            log.info("companion: unavailable (bleak is not installed); destinations and leases come "
                     "from the cloud only")
            return
        self._point_bleak_at_our_bus()
        watch = await self.ctx.system.subscribe(
            self._on_bluez_signal, sender=names.BLUEZ_NAME, path_namespace="/org/bluez")
        self.ctx.health.set(self.name, "ok", "no phone session")
        try:
            await follow(self.phones, self._events, self._phone_event, self._tasks)
        finally:
            await watch.close()

    def _point_bleak_at_our_bus(self) -> None:
        # bleak always opens the *system* bus (dbus-fast reads $DBUS_SYSTEM_BUS_ADDRESS when it
        # connects); BlueZ is on the bus configured as buses.system, so bleak must find that one.
        addr = self.ctx.config.buses.system
        if addr:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = addr

    def _phone_event(self, event: Event, link: PhoneLink) -> None:
        addr = link.address.upper()
        offers = SERVICE_UUID in {u.lower() for u in link.uuids}
        if event in ("connected", "changed") and offers:
            if addr not in self._tasks:
                self._tasks[addr] = asyncio.get_running_loop().create_task(
                    self._phone_loop(link), name=f"companion:{addr}")
            return
        task = self._tasks.pop(addr, None)
        if task is not None:
            task.cancel()
        self._health()

    def _health(self) -> None:
        n = len(self._tasks)
        self.ctx.health.set(self.name, "ok", f"{n} phone session{'s' if n != 1 else ''}" if n else "no phone session")

    # -- not bonded: ignored ------------------------------------------------------------------------
    def _on_bluez_signal(self, msg: Message) -> None:
        """Devices that offer the companion service without being bonded get one log line."""
        if msg.member == "InterfacesAdded" and msg.signature == "oa{sa{sv}}":
            path, ifaces = msg.body
            props = ifaces.get(names.BLUEZ_DEVICE_IFACE)
            if isinstance(props, dict):
                self._device_seen(str(path), {k: v.value for k, v in props.items()})
        elif (msg.member == "PropertiesChanged" and msg.signature == "sa{sv}as"
              and msg.body[0] == names.BLUEZ_DEVICE_IFACE):
            self._device_seen(str(msg.path), {k: v.value for k, v in msg.body[1].items()})
        elif msg.member == "InterfacesRemoved" and msg.signature == "oas":
            self._bond.pop(str(msg.body[0]), None)

    def _device_seen(self, path: str, props: dict[str, Any]) -> None:
        flags = self._bond.setdefault(path, {})
        for key in ("Bonded", "Paired"):  # Bonded from 5.66; either one makes the phone ours
            if isinstance(props.get(key), bool):
                flags[key] = props[key]
        uuids = props.get("UUIDs")
        if not isinstance(uuids, list) or SERVICE_UUID not in {str(u).lower() for u in uuids}:
            return
        if any(flags.values()) or path in self._ignored:
            return
        self._ignored.add(path)
        log.info("companion: ignoring %s: it offers the companion service but is not paired with this car",
                 redact_address(path.rsplit("/", 1)[-1][4:].replace("_", ":")))

    # -- one phone -----------------------------------------------------------------------------------
    async def _phone_loop(self, link: PhoneLink) -> None:
        addr = link.address.upper()
        backoff = Backoff(self.cfg.retry_base, self.cfg.retry_max, "equal")
        failures = 0
        self._health()
        while True:
            try:
                if await self._session(link):
                    return  # no usable companion service: not again until the phone reconnects
                failures = 0
            except asyncio.CancelledError:
                raise
            except (SessionEnded, ProtocolError, TimeoutError) as exc:
                failures += 1
                log.info("companion: session with %s ended: %s", redact_address(addr), _why(exc))
            except Exception as exc:  # bleak's and D-Bus errors: the next connection may do better
                failures += 1
                log.warning("companion: session with %s failed: %s", redact_address(addr), _why(exc))
            await asyncio.sleep(backoff.delay(max(failures, 1), self._rng))

    async def _session(self, link: PhoneLink) -> bool:
        """One GATT session; returns True when the phone serves no usable companion service (do
        not try again until it reconnects), raises :class:`SessionEnded` when it went away."""
        from bleak import BleakClient
        from bleak.backends.device import BLEDevice

        addr = link.address.upper()
        gone = asyncio.Event()
        device = BLEDevice(addr, link.name, {"path": link.device_path, "props": {}})
        client = BleakClient(device, disconnected_callback=lambda _c: gone.set(),
                             timeout=self.cfg.connect_timeout)
        subscribed: list[Any] = []
        try:
            async with asyncio.timeout(self.cfg.connect_timeout + 1.0):
                await client.connect()
            service = client.services.get_service(SERVICE_UUID)
            if service is None:
                log.info("companion: %s has no companion service", redact_address(addr))
                return True
            chars = {c.uuid.lower(): c for c in service.characteristics}
            if VERSION_UUID in chars:
                ver = await self._op(client.read_gatt_char(chars[VERSION_UUID]))
                if len(ver) < 1 or ver[0] != MAJOR:
                    log.info("companion: %s speaks protocol %s, this car %d.x: ignored",
                             redact_address(addr), ".".join(str(b) for b in ver[:2]) or "?", MAJOR)
                    return True
            docs = [u for u in (LEASE_UUID, DESTINATIONS_UUID) if u in chars]
            dirty: set[str] = set(docs)
            wake = asyncio.Event()
            last_crc: dict[str, int] = {}
            selected: dict[str, int] = {}

            def notified(uuid: str) -> Callable[[Any, bytearray], None]:
                # On BlueZ a value the car *reads* reaches this handler too (the characteristic's
                # Value changes, signalled before the read's reply), as a whole frame; notifications
                # are 9-byte headers (docs/ble-companion.md §3): only those count.
                def cb(_char: Any, data: bytearray) -> None:
                    if len(data) != 9:  # a read's frame (BlueZ), not a notification
                        return
                    try:
                        head = parse_frame(bytes(data), header_only=True)
                    except ProtocolError:
                        head = None
                    if head is None or last_crc.get(uuid) != head.crc:
                        dirty.add(uuid)
                        wake.set()
                return cb

            for uuid in docs:
                if "notify" in chars[uuid].properties:
                    await self._op(client.start_notify(chars[uuid], notified(uuid)))
                    subscribed.append(chars[uuid])
            while True:
                wake.clear()
                if LEASE_UUID in dirty:
                    dirty.discard(LEASE_UUID)
                    await self._take_lease(addr, await self._document(client, chars[LEASE_UUID], MAX_LEASE_BYTES,
                                                                      selected, last_crc))
                if DESTINATIONS_UUID in dirty:
                    dirty.discard(DESTINATIONS_UUID)
                    doc = await self._document(client, chars[DESTINATIONS_UUID], MAX_DESTINATIONS_BYTES,
                                               selected, last_crc)
                    if ACK_UUID in chars:
                        await self._take_destinations(addr, client, chars[ACK_UUID], doc)
                if gone.is_set() or not client.is_connected:
                    raise SessionEnded("the phone went away")
                if not dirty:
                    await _first(wake.wait(), gone.wait())
        finally:
            await self._release(client, subscribed)

    async def _op(self, aw: Awaitable[T]) -> T:
        async with asyncio.timeout(self.cfg.op_timeout):
            return await aw

    async def _document(self, client: Any, char: Any, limit: int, selected: dict[str, int],
                        last_crc: dict[str, int]) -> bytes:
        """A whole chunked document (docs/ble-companion.md §3).  ``last_crc[uuid]`` is set to the
        CRC of the version being read as soon as chunk 0 says it."""
        uuid = char.uuid.lower()
        async with asyncio.timeout(self.cfg.document_timeout):
            for _attempt in range(READ_ATTEMPTS):
                first = await self._chunk(client, char, 0, selected)
                last_crc[uuid] = first.crc
                if first.count == 0:
                    return b""
                check_size(first, limit)
                if first.index != 0:
                    continue
                frames = [first]
                total = len(first.payload)
                for i in range(1, first.count):
                    f = await self._chunk(client, char, i, selected)
                    if f.index != i or f.count != first.count or f.crc != first.crc:
                        break  # it changed under us: from chunk 0 again
                    total += len(f.payload)
                    if total > limit:
                        raise ProtocolError(f"document too large (over {limit} bytes)")
                    frames.append(f)
                else:
                    try:
                        return whole(frames, limit)
                    except DocumentChanged:
                        pass
                selected.pop(uuid, None)
            raise ProtocolError(f"the document kept changing while it was read ({uuid[:8]})")

    async def _chunk(self, client: Any, char: Any, index: int, selected: dict[str, int]) -> Frame:
        uuid = char.uuid.lower()
        if selected.get(uuid, 0) != index:
            await self._op(client.write_gatt_char(char, select(index), response=True))
            selected[uuid] = index
        value = await self._op(client.read_gatt_char(char))
        frame = parse_frame(bytes(value))
        if frame.index != index:
            selected[uuid] = frame.index
        return frame

    async def _take_lease(self, addr: str, doc: bytes) -> None:
        if not doc:
            return
        sink = self.ctx.services.relayed_leases
        if sink is None:
            return
        outcome, detail = await sink.take_relayed_lease(doc.decode("ascii", "replace"), courier=SOURCE)
        log.info("companion: the lease from %s: %s (%s)", redact_address(addr), outcome, detail)
        if outcome == "later":
            raise SessionEnded("the lease cannot be verified yet")

    async def _take_destinations(self, addr: str, client: Any, ack_char: Any, doc: bytes) -> None:
        good, bad = parse_destinations(doc)
        nav = self.ctx.services.navigation
        acked: list[str] = []
        if nav is not None:
            for d in good:
                dest = Destination(label=d.label, lat=d.lat, lon=d.lon, query=d.address if d.lat is None else "")
                # Stored (durably) before it is acknowledged; the relay keeps one intent per
                # (source, phone/id, place), so an id seen again is acknowledged again, not re-offered.
                await nav.offer(dest, source=SOURCE, source_ref=f"{addr}/{d.id}", phone=addr)
                acked.append(d.id)
        for reason in {r for _i, r in bad}:
            log.info("companion: %s listed a destination the car cannot use (%s)", redact_address(addr), reason)
        for value in ack_writes(acked, bad):
            await self._op(client.write_gatt_char(ack_char, value, response=True))
        if acked or bad:
            log.info("companion: %d destination(s) from %s taken, %d rejected", len(acked), redact_address(addr),
                     len(bad))

    async def _release(self, client: Any, subscribed: list[Any]) -> None:
        """Let go of the phone without disconnecting it (see :func:`drop_gatt_session`), its
        notifications stopped first."""
        if client.is_connected:
            for char in subscribed:
                with contextlib.suppress(Exception):
                    await self._op(client.stop_notify(char))
        drop_gatt_session(client)


def drop_gatt_session(client: Any) -> None:
    """End a ``BleakClient``'s session without disconnecting the device: bleak's ``disconnect()``
    calls ``Device1.Disconnect``, which drops every bearer (the phone's calls and contacts too), and
    bleak 1.x-3.x has no public call to end only its own GATT session.  So close bleak's own D-Bus
    connection: bluetoothd ends whatever that connection still held (src/gatt-client.c watches
    each notify client's bus name)."""
    backend = getattr(client, "_backend", None)
    bus = getattr(backend, "_bus", None)
    if backend is None or bus is None:
        return
    with contextlib.suppress(Exception):
        backend._cleanup_all()
    backend._bus = None
    with contextlib.suppress(Exception):
        bus.disconnect()


async def _first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the phone did not answer in time"
    return f"{type(exc).__name__}: {exc}"[:200]
