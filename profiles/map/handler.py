"""The ``messages`` component: SMS, MMS and e-mail from the primary phone over MAP (obexd).

* When the primary phone connects with MAP: open a ``map`` session (obexd registers for MAP
  notifications by itself, reference §2.6), fetch the newest ``fetch_count`` messages of the last
  ``fetch_days`` days from the inbox (SMS, MMS and e-mail, as the phone's ``SupportedTypes`` allow),
  store them per phone.
* A notification (InterfacesAdded of a Message1 with Status "notification", §2.8): list the folder
  for its metadata, download it, store it, emit ``MessageReceived`` (sender named from contacts),
  and offer the destinations found in it to the navigation relay.
* Phones that never sent a notification are polled (UpdateInbox + ListMessages) every
  ``poll_interval`` while connected, and only then.
* A lost session (phone gone, obexd restarted, link dropped mid-download) is reopened while the
  phone stays connected; what was being fetched is picked up by the next sync and still announced.
* Reading, marking read, deleting and sending need the phone: without it they fail with
  NotConnected and nothing is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dashbridge.daemon.context import AppContext
from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.errors import BusError
from dashbridge.daemon.dbus.watch import NameWatcher
from dashbridge.daemon.errors import InvalidInput, NotConnected, NotFound, NotReadyError, OperationFailed
from dashbridge.daemon.logs import redact, redact_address
from dashbridge.daemon.phones import Event, PhoneLink, follow
from dashbridge.daemon.services import Destination

from ..limits import MAX_BODY, MAX_EMAIL, MAX_NAME, MAX_SUBJECT, clip, echo
from . import bmessage, intents
from .client import MapSession, ObexTracker, TransferFailed
from .email_body import clean_text, looks_like_mime, parse_email
from .listing import (
    BMSG_API_TYPE,
    SUPPORTED_TO_FILTER,
    Listing,
    listing_from_props,
    local_iso,
    map_datetime_to_iso,
    period_begin,
)
from .message import StoredMessage, parse_id
from .store import MessageStore

log = logging.getLogger(__name__)

# Reconnect ladder after a failed session set-up (seconds); a session that was serving and got
# lost (obexd restart, link drop) is retried at once first.
RECONNECT_LADDER_S = (0.5, 2.0, 5.0, 10.0, 30.0, 60.0)
STABLE_SESSION_S = 10.0
NOTIFY_LIST_COUNT = 8  # a notification's metadata is looked up among the newest this many
POLL_LIST_COUNT = 20
MAX_TEXT_CHARS = MAX_BODY
MAX_SEND_CHARS = 4000  # ~25 SMS segments; e-mail text longer than this is refused as well
ADDRESS_MAX = MAX_EMAIL
STANDARD_FOLDERS = ("inbox", "outbox", "sent", "deleted", "draft")
MAX_EXTRA_FOLDERS = 8
_FOLDER_RE = re.compile(r"^[A-Za-z0-9_.\- ]{1,40}$")

State = tuple[str, str]  # (state, detail) per phone


class SessionLost(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    message: StoredMessage
    links: tuple[str, ...]


def _ladder(attempt: int) -> float:
    return RECONNECT_LADDER_S[min(attempt, len(RECONNECT_LADDER_S)) - 1] if attempt > 0 else 0.0


class MessagesComponent:
    name = "messages"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.messages
        self.db = MessageStore(ctx.store)
        self.tracker = ObexTracker(ctx.session, timeout=self.cfg.obex_timeout)
        self.tracker.listeners.append(self._on_obex)
        self.spool = Path(ctx.config.state_directory) / "map-outgoing"
        self.transfers = ctx.services.transfer_dir(ctx.config)
        self.sessions: dict[str, PhoneSession] = {}
        self.states: dict[str, State] = {}
        self._events: asyncio.Queue[tuple[Event, PhoneLink]] = asyncio.Queue()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._obex_up = asyncio.Event()
        # Listeners the API (and tests) register: message, changed(id, dict), removed(id), synced, states
        self.received_listeners: list[Callable[[StoredMessage], None]] = []
        self.changed_listeners: list[Callable[[StoredMessage], None]] = []
        self.removed_listeners: list[Callable[[str], None]] = []
        self.synced_listeners: list[Callable[[str, int], None]] = []
        self.state_listeners: list[Callable[[], None]] = []
        self.phones = ctx.services.phones
        self.phones.add_listener(lambda ev, link: self._events.put_nowait((ev, link)))

    # -- component ------------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.tracker.mirror.subscribe()
        watcher = NameWatcher(self.ctx.session, names.OBEX_NAME, self._obex_owner)
        await watcher.start()
        if watcher.owner is None:
            self.ctx.health.set(self.name, "degraded", "obexd is not on the session bus")
        try:
            await follow(self.phones, self._events, self._phone_event, self._tasks)
        finally:
            await watcher.stop()

    def _phone_event(self, event: Event, link: PhoneLink) -> None:
        addr = link.address.upper()
        wants_map = link.role == "primary" and names.UUID_MAP_MAS in {u.lower() for u in link.uuids}
        if event in ("connected", "changed") and wants_map:
            if addr not in self._tasks:
                session = PhoneSession(self, link)
                self.sessions[addr] = session
                self._tasks[addr] = asyncio.get_running_loop().create_task(session.run(), name=f"map:{addr}")
            return
        task = self._tasks.pop(addr, None)
        if task is not None:
            task.cancel()
        self.sessions.pop(addr, None)
        if event == "forgotten":
            self.db.forget_phone(addr)
            nav = self.ctx.services.navigation
            if nav is not None:
                nav.drop_phone(addr)
            log.info("messages of %s deleted (phone forgotten)", redact_address(addr))
        if event in ("connected", "changed") and link.role == "primary":
            self.set_state(addr, "unavailable", "the phone does not offer MAP")
        else:
            self.set_state(addr, None)

    async def _obex_owner(self, owner: str | None) -> None:
        if owner is None:
            self._obex_up.clear()
            self.tracker.mirror.reset()
            self.ctx.health.set(self.name, "degraded", "obexd is not on the session bus")
            log.info("obexd left the session bus")
            return
        for attempt in range(3):
            try:
                await self.tracker.mirror.load(owner)
                break
            except BusError as exc:
                log.warning("cannot read obexd's objects (%s); attempt %d", exc, attempt + 1)
                await asyncio.sleep(_ladder(attempt + 1))
        else:
            self.ctx.health.set(self.name, "degraded", "obexd does not answer")
            return
        self._obex_up.set()
        self.ctx.health.set(self.name, "ok", "")
        log.info("obexd is on the session bus")

    def _on_obex(self, kind: str, path: str, iface: str, props: dict[str, Any]) -> None:
        if kind == "reset":
            for s in self.sessions.values():
                s.lost.set()
            return
        if kind == "removed" and iface == names.OBEX_SESSION_IFACE:
            for s in self.sessions.values():
                if s.map is not None and s.map.path == path:
                    s.lost.set()
            return
        if kind == "changed" and iface == names.OBEX_MESSAGE_IFACE and isinstance(props.get("Folder"), str):
            # MessageDeleted / MessageShift events from the phone (reference §2.8 item 4).
            parent, _, leaf = path.rpartition("/")
            for s in self.sessions.values():
                if s.map is not None and s.map.path == parent:
                    self._moved(s.addr, leaf.removeprefix("message"), props["Folder"])
            return
        if kind == "added" and iface == names.OBEX_MESSAGE_IFACE and props.get("Status") == "notification":
            parent, _, leaf = path.rpartition("/")
            for s in self.sessions.values():
                if s.map is not None and s.map.path == parent:
                    s.pending_new.add(leaf.removeprefix("message"))  # announced even if a sync stores it first
                    s.notifications.put_nowait((path, dict(props)))

    def _moved(self, addr: str, handle: str, folder_path: str) -> None:
        m = self.db.get(addr, handle)
        folder = folder_path.rstrip("/").rsplit("/", 1)[-1].lower()
        if m is None or not folder or m.folder == folder:
            return
        self.db.set_folder(addr, handle, folder)
        self._emit(self.changed_listeners, m.with_(folder=folder))

    # -- state ----------------------------------------------------------------------------------------
    def set_state(self, addr: str, state: str | None, detail: str = "") -> None:
        new = None if state is None else (state, detail)
        if self.states.get(addr) == new:
            return
        if new is None:
            self.states.pop(addr, None)
        else:
            self.states[addr] = new
            log.info("MAP %s: %s%s", redact_address(addr), state, f" ({detail})" if detail else "")
        for cb in list(self.state_listeners):
            cb()

    def _emit(self, listeners: list[Callable[..., None]], *args: Any) -> None:
        for cb in list(listeners):
            try:
                cb(*args)
            except Exception:
                log.exception("messages listener failed")

    # -- names ----------------------------------------------------------------------------------------
    def display_name(self, m: StoredMessage) -> str:
        """Contacts first, then the name the phone gave, then the address itself."""
        if m.sender and m.type != "email":
            callerid = self.ctx.services.callerid
            if callerid is not None:
                try:
                    name = callerid.display_name(m.phone, m.sender)
                except Exception:
                    log.exception("caller-ID lookup failed")
                    name = None
                if isinstance(name, str) and name:
                    return name
        return m.sender_name or m.sender

    # -- intents --------------------------------------------------------------------------------------
    async def offer_destinations(self, m: StoredMessage, links: tuple[str, ...]) -> int:
        """Offer what the message points at to the navigation relay; returns how many."""
        sink = self.ctx.services.navigation
        if sink is None or m.direction != "in" or not m.body:
            return 0
        if not self.ctx.services.feature_on("message_navigation"):
            log.debug("destinations in message %s not offered: message_navigation is switched off", m.handle)
            return 0
        floor = self.ctx.config.navigation.min_confidence
        text = m.body + ("\n" + "\n".join(links) if links else "")
        n = 0
        for it in intents.extract(text):
            if it.confidence < floor:
                continue
            dest = Destination(label=it.label, lat=it.lat, lon=it.lon, query=it.url if it.kind == "link" else it.query,
                               confidence=it.confidence)
            try:
                await sink.offer(dest, source="message", source_ref=m.id, phone=m.phone)
                n += 1
            except Exception as exc:  # a bad destination must not lose the message
                log.warning("destination from message %s not offered: %s", m.handle, exc)
        return n

    # -- API operations -------------------------------------------------------------------------------
    def _lookup(self, message_id: str) -> StoredMessage:
        parsed = parse_id(message_id)
        if parsed is None:
            raise InvalidInput("message id must look like AA:BB:CC:DD:EE:FF/<handle>")
        m = self.db.get(*parsed)
        if m is None:
            raise NotFound(f"no message {echo(message_id)}")
        return m

    def _ready_session(self, addr: str) -> PhoneSession:
        s = self.sessions.get(addr.upper())
        if s is None:
            raise NotConnected(f"phone {echo(addr)} is not connected (or does not offer messages); nothing was done")
        if s.map is None or s.map.path is None or not s.ready:
            raise NotReadyError(f"the message service of phone {echo(addr)} is not ready yet; nothing was done")
        return s

    def list(self, **kw: Any) -> list[StoredMessage]:
        self.ctx.services.require("messages")
        return self.db.list(**kw)

    async def get(self, message_id: str) -> StoredMessage:
        self.ctx.services.require("messages")
        m = self._lookup(message_id)
        if m.body is None and m.direction == "in":
            s = self.sessions.get(m.phone)
            if s is not None and s.ready:
                m = await s.refetch(m)
        return m

    async def mark_read(self, message_id: str, read: bool) -> StoredMessage:
        self.ctx.services.require("messages")
        m = self._lookup(message_id)
        if m.direction == "in":
            s = self._ready_session(m.phone)
            await s.set_read(m, read)
        self.db.set_read(m.phone, m.handle, read)
        m = m.with_(read=read)
        self._emit(self.changed_listeners, m)
        return m

    async def delete(self, message_id: str) -> None:
        self.ctx.services.require("messages")
        m = self._lookup(message_id)
        if m.direction == "in":
            s = self._ready_session(m.phone)
            await s.delete(m)
        self.db.delete(m.phone, m.handle)
        self._emit(self.removed_listeners, m.id)

    async def send(self, phone: str, mtype: str, recipient: str, subject: str, text: str) -> StoredMessage:
        self.ctx.services.require("messages")
        addr = phone.upper() if phone else ""
        if not addr:
            primary = self.phones.primary()
            if primary is None:
                raise NotConnected("no phone is connected; nothing was sent")
            addr = primary.address.upper()
        if mtype not in ("sms", "email"):
            raise InvalidInput("type must be sms or email")
        recipient = recipient.strip()
        if not recipient or len(recipient) > ADDRESS_MAX or any(c < " " for c in recipient):
            raise InvalidInput("recipient must be a phone number or an e-mail address")
        if mtype == "sms" and not all(c.isdigit() or c in "+-() *#" for c in recipient):
            raise InvalidInput("an SMS recipient must be a phone number")
        if mtype == "email" and ("@" not in recipient or " " in recipient):
            raise InvalidInput("an e-mail recipient must be an e-mail address")
        if not text.strip() or len(text) > MAX_SEND_CHARS:
            raise InvalidInput(f"text must be 1 to {MAX_SEND_CHARS} characters")
        if len(subject) > MAX_SUBJECT:
            raise InvalidInput(f"subject must be at most {MAX_SUBJECT} characters")
        s = self._ready_session(addr)
        return await s.send(mtype, recipient, subject, text)

    async def reply(self, message_id: str, text: str) -> StoredMessage:
        self.ctx.services.require("messages")
        m = self._lookup(message_id)
        if m.direction != "in" or not m.sender:
            raise InvalidInput("only received messages with a sender can be replied to")
        if m.type == "email":
            subject = m.subject if m.subject.lower().startswith("re:") else f"Re: {m.subject}".strip()
            subject = clip(subject, MAX_SUBJECT)
            return await self.send(m.phone, "email", m.sender, subject, text)
        return await self.send(m.phone, "sms", m.sender, "", text)

    async def refresh(self, phone: str) -> int:
        """``phone`` empty: the phone whose messages the car follows (MAP runs for the primary
        phone only, so there is at most one session)."""
        self.ctx.services.require("messages")
        if not phone:
            if not self.sessions:
                raise NotConnected("no connected phone offers messages; nothing was done")
            phone = next(iter(self.sessions))
        s = self._ready_session(phone)
        try:
            return await s.poll()
        except TransferFailed as exc:  # the phone stalled or refused: say so, not "Internal"
            raise OperationFailed(f"the phone did not deliver its message list ({exc}); try again") from None


class PhoneSession:
    """MAP for one connected primary phone: connect, sync, notifications/polling, operations."""

    def __init__(self, comp: MessagesComponent, link: PhoneLink) -> None:
        self.comp = comp
        self.link = link
        self.addr = link.address.upper()
        self.cfg = comp.cfg
        self.map: MapSession | None = None
        self.lost = asyncio.Event()
        self.notifications: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.lock = asyncio.Lock()  # one obexd operation sequence at a time per session
        self.ready = False
        self.types: list[str] = []
        self.supported: list[str] = []
        self.pending_new: set[str] = set()  # notified but not stored yet (survives a lost session)
        self.folders: list[str] = ["inbox"]  # what is synced: the inbox and any e-mail folders

    async def run(self) -> None:
        comp = self.comp
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            if not comp._obex_up.is_set():
                comp.set_state(self.addr, "waiting", "obexd is not running")
                await comp._obex_up.wait()
            self.lost.clear()
            self.map = MapSession(comp.ctx.session_bus, comp.tracker, self.addr,
                                  call_timeout=self.cfg.obex_timeout, connect_timeout=self.cfg.connect_timeout,
                                  idle_timeout=self.cfg.transfer_idle_timeout,
                                  max_bytes=self.cfg.max_message_bytes, spool=comp.spool,
                                  transfers=comp.transfers)
            opened_at: float | None = None
            try:
                comp.set_state(self.addr, "connecting")
                await self.map.open()
                opened_at = loop.time()
                await self._serve()
            except asyncio.CancelledError:
                raise
            except (BusError, TransferFailed, SessionLost, OSError) as exc:
                if "service record" in str(exc).lower():
                    comp.set_state(self.addr, "unavailable", "the phone does not offer MAP")
                    return
                log.warning("MAP %s: %s; reconnecting", redact_address(self.addr), type(exc).__name__)
                comp.set_state(self.addr, "retrying", type(exc).__name__)
            except Exception:
                log.exception("MAP %s: unexpected failure", redact_address(self.addr))
                comp.set_state(self.addr, "retrying", "internal error")
            finally:
                self.ready = False
                m, self.map = self.map, None
                if m is not None and not self.lost.is_set():
                    with contextlib.suppress(Exception):
                        await m.close()
            # A session that served for a while and then got lost is reopened at once; repeated
            # failures climb the ladder.  While obexd is away, waiting for it is the pacing.
            if opened_at is not None and loop.time() - opened_at > STABLE_SESSION_S:
                failures = 0
            else:
                failures += 1
            if comp._obex_up.is_set() and failures:
                await asyncio.sleep(_ladder(failures))

    # -- serving --------------------------------------------------------------------------------------
    async def _serve(self) -> None:
        assert self.map is not None
        comp = self.comp
        self.supported = list(self.map.supported_types)
        self.types = sorted({SUPPORTED_TO_FILTER[t] for t in self.supported if t in SUPPORTED_TO_FILTER})
        async with self.lock:
            await self.map.set_folder("/telecom/msg")
            self.folders = await self._fetch_folders()
        comp.set_state(self.addr, "syncing")
        await self.initial_sync()
        self.ready = True
        polling = not comp.db.notifies(self.addr)
        comp.set_state(self.addr, "polling" if polling else "ready",
                       "no notifications seen from this phone yet" if polling else "")
        while True:
            if self.lost.is_set():
                raise SessionLost("MAP session gone")
            get = asyncio.ensure_future(self.notifications.get())
            lost = asyncio.ensure_future(self.lost.wait())
            try:
                done, _ = await asyncio.wait({get, lost}, timeout=self.cfg.poll_interval if polling else None,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                if not get.done():
                    get.cancel()
            if get in done and not get.cancelled():
                path, props = get.result()
                if polling:
                    polling = False
                    comp.db.set_notifies(self.addr)
                    comp.set_state(self.addr, "ready")
                await self._on_notification(path, props)
            elif not done:
                await self.poll()

    async def _fetch_folders(self) -> list[str]:
        """The inbox, and the e-mail folders some phones add beside the standard ones."""
        assert self.map is not None
        try:
            names_ = await self.map.list_folders()
        except BusError as exc:
            log.info("MAP %s: ListFolders failed (%s); inbox only", redact_address(self.addr), exc.name)
            return ["inbox"]
        extra = [n for n in names_ if n.lower() not in STANDARD_FOLDERS and _FOLDER_RE.match(n)]
        return ["inbox", *extra[:MAX_EXTRA_FOLDERS]]

    def _folder_name(self, folder: str) -> str:
        """The name to ask obexd for, given a (lower-cased) folder from a listing; "" if unknown."""
        if folder in STANDARD_FOLDERS:
            return folder
        return next((f for f in self.folders if f.lower() == folder), "")

    async def initial_sync(self) -> int:
        assert self.map is not None
        comp = self.comp
        listing: dict[str, dict[str, Any]] = {}
        async with self.lock:
            for folder in self.folders:
                listing.update(await self.map.list_messages(
                    folder, max_count=self.cfg.fetch_count, period_begin=period_begin(self.cfg.fetch_days),
                    types=self.types or None))
        new = await self._store_listing(listing, announce_all=False)
        comp.db.synced(self.addr)
        comp._emit(comp.synced_listeners, self.addr, new)
        log.info("MAP %s: synced, %d new of %d listed", redact_address(self.addr), new, len(listing))
        return new

    async def poll(self) -> int:
        """UpdateInbox + a short listing; new messages are announced like notified ones."""
        assert self.map is not None
        async with self.lock:
            with contextlib.suppress(BusError):
                await self.map.update_inbox()
            listing: dict[str, dict[str, Any]] = {}
            for folder in self.folders:
                listing.update(await self.map.list_messages(folder, max_count=POLL_LIST_COUNT,
                                                            period_begin=period_begin(1), types=self.types or None))
        return await self._store_listing(listing, announce_all=True)

    async def _store_listing(self, listing: dict[str, dict[str, Any]], *, announce_all: bool) -> int:
        comp = self.comp
        known = comp.db.known_handles(self.addr)
        new = 0
        for path, props in listing.items():
            item = listing_from_props(path, props)
            if item is None:
                continue
            if item.handle in known:
                old = comp.db.get(self.addr, item.handle)
                if old is not None and (old.read != item.read or (item.folder and old.folder != item.folder)):
                    comp.db.set_read(self.addr, item.handle, item.read)
                    if item.folder:
                        comp.db.set_folder(self.addr, item.handle, item.folder)
                    comp._emit(comp.changed_listeners, old.with_(read=item.read, folder=item.folder or old.folder))
                continue
            fetched = await self._fetch(item.handle, item)
            if not comp.db.put(fetched.message, keep=self.cfg.keep_count):
                log.warning("MAP %s: phone not registered; message not stored", redact_address(self.addr))
                continue
            new += 1
            announce = announce_all or item.handle in self.pending_new
            self.pending_new.discard(item.handle)
            await self._announce(fetched, announce=announce)
        return new

    async def _announce(self, fetched: Fetched, *, announce: bool) -> None:
        comp = self.comp
        m = fetched.message
        if announce:
            comp._emit(comp.received_listeners, m)
        if announce or _recent(m.received, comp.ctx.config.navigation.intent_expiry):
            await comp.offer_destinations(m, fetched.links)

    async def _on_notification(self, path: str, props: dict[str, Any]) -> None:
        assert self.map is not None
        item = listing_from_props(path, props)
        if item is None:
            return
        handle = item.handle
        if self.comp.db.has_body(self.addr, handle):
            self.pending_new.discard(handle)
            return  # stored meanwhile (and announced then), or a repeated event
        self.pending_new.add(handle)
        folder = item.folder or "inbox"
        listed: Listing | None = None
        async with self.lock:
            name = self._folder_name(folder)
            if name:
                try:
                    rows = await self.map.list_messages(name, max_count=NOTIFY_LIST_COUNT,
                                                        types=[item.type] if item.type in self.types else None)
                except BusError as exc:
                    log.info("MAP %s: listing after a notification failed (%s)", redact_address(self.addr), exc.name)
                    rows = {}
                for p, pr in rows.items():
                    li = listing_from_props(p, pr)
                    if li is not None and li.handle == handle:
                        listed = li
        fetched = await self._fetch(handle, listed or item)
        if not self.comp.db.put(fetched.message, keep=self.cfg.keep_count):
            log.warning("MAP %s: phone not registered; message not stored", redact_address(self.addr))
            self.pending_new.discard(handle)
            return
        self.pending_new.discard(handle)
        log.info("MAP %s: new %s %s", redact_address(self.addr), fetched.message.type, handle)
        await self._announce(fetched, announce=True)

    # -- downloading ------------------------------------------------------------------------------------
    async def _fetch(self, handle: str, item: Listing) -> Fetched:
        assert self.map is not None
        async with self.lock:
            data, truncated = await self.map.get_message(handle)
        # off the loop: up to max_message_bytes (16 MB allowed) of MIME/bMessage parsing
        return await asyncio.to_thread(decode_message, self.addr, handle, item, data, truncated,
                                       max_text=MAX_TEXT_CHARS, max_bytes=self.cfg.max_message_bytes)

    async def refetch(self, m: StoredMessage) -> StoredMessage:
        item = Listing(m.handle, m.folder, m.type, m.subject, "", m.sender_name, m.sender, m.recipient, m.size,
                       m.read, "complete")
        async with self.lock:
            await self._ensure_object(m)
        fetched = await self._fetch(m.handle, item)
        new = fetched.message.with_(received=m.received or fetched.message.received)
        self.comp.db.put(new, keep=self.cfg.keep_count)
        return new

    # -- operations -----------------------------------------------------------------------------------
    async def _ensure_object(self, m: StoredMessage) -> None:
        """obexd only has Message1 objects for messages listed (or notified) in this session."""
        assert self.map is not None
        path = self.map.message_path(m.handle)
        if self.comp.tracker.mirror.get(path, names.OBEX_MESSAGE_IFACE) is not None:
            return
        folder = self._folder_name(m.folder) or "inbox"
        stamp = _iso_to_map(m.received)
        await self.map.list_messages(folder, max_count=64, period_begin=stamp, period_end=stamp)
        if self.comp.tracker.mirror.get(path, names.OBEX_MESSAGE_IFACE) is None:
            raise NotFound("the phone no longer has this message")

    async def set_read(self, m: StoredMessage, read: bool) -> None:
        assert self.map is not None
        async with self.lock:
            await self._ensure_object(m)
            await self.map.set_read(m.handle, read)

    async def delete(self, m: StoredMessage) -> None:
        assert self.map is not None
        async with self.lock:
            await self._ensure_object(m)
            await self.map.delete(m.handle)

    async def send(self, mtype: str, recipient: str, subject: str, text: str) -> StoredMessage:
        assert self.map is not None
        if mtype == "email":
            if "EMAIL" not in self.supported:
                raise OperationFailed("this phone does not offer e-mail over Bluetooth")
            content = _email_text(recipient, subject, text)
            bm = bmessage.new_message(content, recipient=recipient, msg_type="EMAIL")
        else:
            if not any(t.startswith("SMS") for t in self.supported) and self.supported:
                raise OperationFailed("this phone does not offer SMS over Bluetooth")
            bm = bmessage.new_message(text, recipient=recipient, msg_type="SMS_GSM")
        data = bmessage.serialize(bm)
        try:
            async with self.lock:
                await self.map.push(data, "outbox")
        except TransferFailed as exc:
            log.info("MAP %s: the phone refused a message (%s)", redact_address(self.addr), exc)
            raise OperationFailed("the phone did not accept the message; it was not sent") from None
        out = StoredMessage(phone=self.addr, handle=f"out-{uuid.uuid4().hex[:12]}", folder="outbox", type=mtype,
                            direction="out", recipient=recipient, subject=subject, body=text, body_state="complete",
                            received=local_iso(), size=len(data), read=True)
        self.comp.db.put(out, keep=self.cfg.keep_count)
        log.info("MAP %s: %s handed to the phone for %s", redact_address(self.addr), mtype, redact(recipient))
        return out


# ---------------------------------------------------------------------------------------------------
# Pure-ish helpers
# ---------------------------------------------------------------------------------------------------


def decode_message(addr: str, handle: str, item: Listing, data: bytes, truncated: bool, *, max_text: int,
                   max_bytes: int) -> Fetched:
    """Bytes of a downloaded bMessage + its listing -> what we store (never raises)."""
    problems: list[str] = []
    links: tuple[str, ...] = ()
    attachments: tuple[dict[str, Any], ...] = ()
    subject = item.subject
    sender, sender_name = item.sender, item.sender_name
    mtype = item.type or "sms"
    received = map_datetime_to_iso(item.timestamp)
    state = "truncated" if truncated else "complete"
    try:
        bm = bmessage.parse(data, truncated=truncated)
    except bmessage.BMessageError as exc:
        problems.append(str(exc))
        text = ""
        state = "broken"
    else:
        problems.extend(bm.warnings)
        mtype = BMSG_API_TYPE.get(bm.type, mtype) if bm.type in BMSG_API_TYPE else mtype
        if bm.sender is not None:
            sender = sender or bm.sender.address
            sender_name = sender_name or bm.sender.display_name
        text = bm.text
        if mtype == "email" or (mtype == "mms" and looks_like_mime(text)):
            eb = parse_email(text, max_input=max_bytes, max_text=max_text)
            problems.extend(eb.warnings)
            text = eb.text
            subject = eb.subject or subject
            if eb.sender_address and (not sender or "@" not in sender):
                sender = eb.sender_address
            sender_name = sender_name or eb.sender_name
            links = eb.links
            attachments = tuple({"name": a.filename, "type": a.mime_type, "size": a.size} for a in eb.attachments)
            if eb.truncated:
                state = "truncated"
            if not received and eb.date:
                received = _email_date_iso(eb.date)
        else:
            text = clean_text(text)
            if len(text) > max_text:
                text = text[:max_text]
                state = "truncated"
    if mtype == "sms" and subject and text and text.startswith(subject[:20]):
        subject = ""  # an SMS listing's subject is just the start of its text
    m = StoredMessage(phone=addr, handle=handle, folder=item.folder or "inbox", type=mtype, direction="in",
                      sender=clip(sender, ADDRESS_MAX), sender_name=clip(sender_name, MAX_NAME),
                      recipient=clip(item.recipient, ADDRESS_MAX), subject=clip(subject, MAX_SUBJECT), body=text,
                      body_state=state, problems=tuple(problems[:16]),
                      attachments=attachments, received=received or local_iso(), size=item.size or len(data),
                      read=item.read)
    return Fetched(m, links)


def _email_text(recipient: str, subject: str, text: str) -> str:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg.set_content(text)
    return msg.as_string()


def _email_date_iso(value: str) -> str:
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return ""
    return dt.replace(microsecond=0).isoformat()


def _iso_to_map(iso: str) -> str:
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        return ""
    return dt.strftime("%Y%m%dT%H%M%S")


def _recent(iso: str, window_s: float) -> bool:
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        return False
    now = datetime.now(dt.tzinfo) if dt.tzinfo else datetime.now()
    return now - dt <= timedelta(seconds=window_s)


__all__ = ["MessagesComponent", "PhoneSession", "decode_message"]
