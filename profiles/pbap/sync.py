"""The contacts component: phonebook, favourites and call history over PBAP (obexd), and caller ID.

When a phone offering PBAP connects (the primary phone; secondary phones too with
``contacts.sync_secondary``), one task per phone does, against obexd on the session bus
(reference §2, §7 items 11-13, §8 items 2-6):

1. ``Client1.CreateSession(address, {"Target": "pbap"})`` with a deadline (12 s, like Android's
   car service),
2. for ``pb`` (then ``fav`` where offered): ``Select`` -> ``GetSize`` (which is also how obexd learns
   the PBAP 1.2 folder counters) -> unchanged counters and database identifier mean no pull;
   otherwise ``PullAll`` page by page (``Offset``/``MaxCount`` typed ``q``, vCard 3.0 asked for —
   obexd's default is 2.1 — and only the fields we use), the owner card ``0.vcf`` skipped.  Each
   page's file is parsed card by card in a worker thread and staged a batch at a time
   (:class:`CardReader`: bounded memory, never the whole page; at most ``MAX_PAGE_BYTES`` per page
   and ``MAX_PHONE_BYTES`` per sync of cards kept, ``profiles/limits.py``);
3. call history ``ich``/``och``/``mch`` (newest ``history_limit`` of each);
4. ONE transaction then swaps the staged books in and replaces the history: a failure anywhere
   before leaves the previous snapshot untouched and nothing is ever duplicated;
5. the caller-ID index of that phone is rebuilt; the session removed.

Transfers: the component subscribes to obexd's ``PropertiesChanged`` (path namespace of the
client sessions) and ``InterfacesRemoved`` once, before any ``PullAll``; events that arrive before
the reply is read are buffered per transfer path.  ``complete`` ends a transfer, ``error`` or the
object's removal without ``complete`` fails it, and so does obexd leaving the bus.  Deadlines are
progress-based (``stall_timeout`` without a status change or more bytes), so a 1,500-contact
phonebook with photos on a slow phone finishes while a dead one is abandoned.  The temp file
obexd leaves behind is always deleted.

Faults: ``Forbidden`` (obexd's own error, or ``Failed "Forbidden"`` from the phone's OBEX answer)
means the phone's "allow contacts?" prompt is open: the state becomes ``permission-pending`` with
the message "Allow contacts access on your phone" and the sync retries along
``permission_retry_delays``; still refused ``permission_timeout`` after the first refusal, the
user said no: ``denied`` (with why and what to do), not retried until the phone reconnects or a
``Resync``; other failures retry along ``retry_delays``; obexd leaving the bus
waits for it to come back and retries at once.  Forgetting a phone deletes its data (also by
``ON DELETE CASCADE`` from ``phones``); ``wipe_on_disconnect`` deletes it when the phone leaves.

Is the :class:`daemon.services.CallerId` service (``ctx.services.callerid``, set by the composition
root), loaded from the store at construction so caller ID works as soon as the daemon starts,
before any phone connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dbus_fast import Message, Variant

from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.call import call as dbus_call
from dashbridge.daemon.dbus.call import unwrap, unwrap_props
from dashbridge.daemon.dbus.errors import BusError, CallTimeout, Failed, Forbidden, ServiceGone
from dashbridge.daemon.dbus.signals import Subscription
from dashbridge.daemon.dbus.watch import NameWatcher
from dashbridge.daemon.errors import InvalidInput, NotConnected, NotFound
from dashbridge.daemon.logs import redact_address
from dashbridge.daemon.phones import PhoneDirectory, PhoneLink
from dashbridge.daemon.transfers import TransferDir

from ..limits import MAX_PAGE_BYTES, MAX_PHONE_BYTES, MAX_PHOTO_BYTES
from .callerid import CallerIdIndex, Match, Normalizer
from .store import ContactStore, Counters
from .vcard import CardError, VCard, VCardParser

if TYPE_CHECKING:
    from dashbridge.daemon.context import AppContext

log = logging.getLogger(__name__)

PERMISSION_MESSAGE = "Allow contacts access on your phone"
DENIED_MESSAGE = ("the phone refused contacts access: allow it in the phone's Bluetooth settings for this car, "
                  "then reconnect the phone or re-sync")
# Fields asked for (PBAP filter names; obexd ListFilterFields).  Asking only for what we use
# makes transfers smaller (no notes, no sounds, no keys).
CONTACT_FIELDS = ("VERSION", "FN", "N", "TEL", "EMAIL", "ADR", "ORG", "TITLE", "NICKNAME", "BDAY", "UID",
                  "X-BT-UID")
HISTORY_FIELDS = ("VERSION", "FN", "N", "TEL", "X-IRMC-CALL-DATETIME")
HISTORY_BOOKS = ("ich", "och", "mch")
READ_CHUNK = 64 * 1024
# Parsed cards handed to the store at a time (their photos included): the memory one page costs,
# and (in cards) the length of one synchronous store slice on the event loop (~6 ms for 250).
BATCH_BYTES = 4 * 1024 * 1024
BATCH_CARDS = 250
ZERO_COUNTER = "0" * 32
# Progress signals per phone at most this often (the final state is always sent).
PROGRESS_INTERVAL_S = 0.25
# A phonebook that changes while we page through it is pulled again, at most this many times.
MAX_BOOK_RESTARTS = 2
REMOVE_SESSION_TIMEOUT_S = 2.0


class SyncError(Exception):
    """One attempt failed; ``retry`` says how."""

    def __init__(self, message: str, *, permission: bool = False, obexd_gone: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permission = permission
        self.obexd_gone = obexd_gone


@dataclass
class SyncStatus:
    """What the dashboard sees per phone (``Contacts1.GetSyncState`` / ``SyncStateChanged``)."""

    phone: str
    state: str = "idle"  # idle|waiting|connecting|permission-pending|denied|syncing|synced|retrying|unsupported
    book: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    last_synced: float = 0.0
    contacts: int = 0
    history: int = 0


StatusListener = Callable[[SyncStatus], None]


@dataclass(eq=False)
class _Transfer:
    path: str
    status: str = "queued"
    transferred: int = 0
    removed: bool = False
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, kind: str, props: dict[str, Any]) -> None:
        if kind == "removed":
            self.removed = True
        else:
            if "Status" in props:
                self.status = str(props["Status"])
            if "Transferred" in props:
                self.transferred = int(props["Transferred"])
        self.event.set()


@dataclass(eq=False)
class _PhoneSync:
    link: PhoneLink
    task: asyncio.Task[None] | None = None
    force: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    session: str | None = None
    last_emit: float = 0.0
    trailing: asyncio.TimerHandle | None = None
    budget: int = MAX_PHONE_BYTES  # bytes of cards (card_cost) this sync may still keep


class ContactsSync:
    """The ``contacts`` component (registered in ``daemon/app.py``) and the ``CallerId`` service."""

    name = "contacts"

    def __init__(self, ctx: AppContext, directory: PhoneDirectory | None = None) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.contacts
        self.bus = ctx.session_bus
        self.router = ctx.session
        self._directory = directory
        self.normalizer = Normalizer(self.cfg.region)
        self.index = CallerIdIndex(self.normalizer)
        self.store = ContactStore(ctx.store, self.normalizer)
        self.transfers = ctx.services.transfer_dir(ctx.config)  # obexd writes each page there, never in its own /tmp
        self._owner: str | None = None
        self._obexd_up = asyncio.Event()
        self._obexd_generation = 0
        self._phones: dict[str, _PhoneSync] = {}
        self._status: dict[str, SyncStatus] = {}
        self._listeners: list[StatusListener] = []
        self._transfers: dict[str, _Transfer] = {}
        self._early: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._sessions: set[str] = set()
        self._listening = False
        self._running = False
        self._rng = random.Random()
        for phone in self.store.phones_with_data():
            self._reindex(phone)

    # ------------------------------------------------------------------ component protocol

    async def run(self) -> None:
        directory = self._directory or self.ctx.services.phones
        self._directory = directory
        subs: list[Subscription] = []
        watcher: NameWatcher | None = None
        self._running = True
        try:
            self.store.clear_staging()  # half-pulled snapshots from before a crash
            owner = lambda: self._owner  # noqa: E731 - follows the current obexd
            subs.append(await self.router.subscribe(
                self._on_properties, sender=names.OBEX_NAME, sender_filter=owner, interface=names.PROPERTIES_IFACE,
                member="PropertiesChanged", path_namespace="/org/bluez/obex/client",
                timeout=self.cfg.call_timeout))
            subs.append(await self.router.subscribe(
                self._on_removed, sender=names.OBEX_NAME, sender_filter=owner, interface=names.OBJECT_MANAGER_IFACE,
                member="InterfacesRemoved", timeout=self.cfg.call_timeout))
            watcher = NameWatcher(self.router, names.OBEX_NAME, self._owner_changed)
            await watcher.start()
            if not self._listening:
                directory.add_listener(self._on_directory)
                self._listening = True
            for link in directory.connected.values():
                self._consider(link)
            if watcher.owner is None:
                self.ctx.health.set(self.name, "degraded", "obexd is not running")
            else:
                self.ctx.health.set(self.name, "ok")
            await asyncio.Future()
        finally:
            self._running = False
            for ps in self._phones.values():
                if ps.task is not None:
                    ps.task.cancel()
            tasks = [ps.task for ps in self._phones.values() if ps.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)
            if watcher is not None:
                await watcher.stop()
            for s in subs:
                with contextlib.suppress(BusError):
                    await s.close()

    # ------------------------------------------------------------------ caller ID service

    def display_name(self, phone: str, number: str) -> str | None:
        """``daemon.services.CallerId``: O(1), no I/O.  No name while contacts are switched off."""
        if not self.ctx.services.feature_on("contacts"):
            return None
        m = self.index.lookup(phone, number)
        return m.name if m is not None else None

    def lookup(self, number: str) -> tuple[str, Match] | None:
        """The first match among connected phones (primary first), then other stored phones."""
        self.ctx.services.require("contacts")
        for phone in self._lookup_order():
            m = self.index.lookup(phone, number)
            if m is not None:
                return phone, m
        return None

    def _lookup_order(self) -> list[str]:
        connected = self._connected_phones()
        rest = [p for p in self.index.phones() if p not in connected]
        return connected + rest

    def _connected_phones(self) -> list[str]:
        d = self._directory or self.ctx.services.phones
        links = sorted(d.connected.values(), key=lambda lk: lk.role != "primary")
        return [lk.address for lk in links]

    def _reindex(self, phone: str) -> None:
        n = self.index.replace_phone(phone, self.store.index_entries(phone))
        log.debug("caller-ID index for %s: %d numbers", redact_address(phone), n)

    # ------------------------------------------------------------------ status

    def add_listener(self, cb: StatusListener) -> None:
        self._listeners.append(cb)

    def status(self, phone: str) -> SyncStatus:
        st = self._status.get(phone)
        if st is None:
            st = SyncStatus(phone)
            st.contacts, st.history = self.store.counts(phone)
            st.last_synced = self.store.last_synced(phone) or 0.0
            if st.contacts or st.history:
                st.state = "synced" if phone in self._phones else "idle"
        return st

    def statuses(self) -> list[SyncStatus]:
        """Every phone connected (being synced) or with stored contacts."""
        phones = set(self._status) | set(self._phones) | set(self.index.phones())
        return [self.status(p) for p in sorted(phones)]

    def _set(self, phone: str, *, progress: bool = False, **changes: Any) -> None:
        """Update a phone's status and tell the listeners; progress-only updates are throttled to
        one per PROGRESS_INTERVAL_S, the latest one always delivered (trailing)."""
        old = self.status(phone)
        new = replace(old, **changes)
        self._status[phone] = new
        ps = self._phones.get(phone)
        if progress and ps is not None and new.state == old.state:
            wait = ps.last_emit + PROGRESS_INTERVAL_S - time.monotonic()
            if wait > 0:
                if ps.trailing is None:
                    ps.trailing = asyncio.get_running_loop().call_later(wait, self._trailing, phone)
                return
        elif new == old and progress:
            return
        self._emit(phone)

    def _trailing(self, phone: str) -> None:
        ps = self._phones.get(phone)
        if ps is not None:
            ps.trailing = None
            self._emit(phone)

    def _emit(self, phone: str) -> None:
        ps = self._phones.get(phone)
        if ps is not None:
            ps.last_emit = time.monotonic()
            if ps.trailing is not None:
                ps.trailing.cancel()
                ps.trailing = None
        st = self.status(phone)
        for cb in list(self._listeners):
            try:
                cb(st)
            except Exception:
                log.exception("contacts status listener failed")

    # ------------------------------------------------------------------ API operations

    def resync(self, phone: str) -> list[str]:
        """Pull everything again, ignoring counters.  ``""``: every phone being synced."""
        self.ctx.services.require("contacts")
        if phone:
            phone = phone.upper()
            ps = self._phones.get(phone)
            if ps is None:
                raise NotConnected(f"{phone} is not connected (or is not synced: secondary phone, no PBAP)")
            targets = [ps]
        else:
            targets = list(self._phones.values())
            if not targets:
                raise NotConnected("no phone to synchronise is connected")
        for ps in targets:
            ps.force = True
            ps.wake.set()
        return [ps.link.address for ps in targets]

    def search(self, text: str, limit: int) -> list[tuple[int, str, str, str]]:
        self.ctx.services.require("contacts")
        if not text.strip():
            raise InvalidInput("search text is empty")
        phones = self._connected_phones() or []
        return self.store.search(text, max(1, min(limit or 20, 500)), phones)

    def contact(self, contact_id: int) -> dict[str, Any]:
        self.ctx.services.require("contacts")
        if not 0 < contact_id < 2**63:  # SQLite integers are 64-bit signed; ids start at 1
            raise NotFound(f"no contact {contact_id} (contact ids come from Search, Lookup or GetCallHistory)")
        c = self.store.contact(contact_id)
        if c is None:
            raise NotFound(f"no contact {contact_id} (no longer on the phone)")
        return c

    def _listed_phone(self, phone: str) -> str:
        """An address (any phone with stored contacts), or "" for the primary connected phone."""
        self.ctx.services.require("contacts")
        if phone:
            return phone.upper()
        connected = self._connected_phones()
        if not connected:
            raise NotConnected("no phone is connected")
        return connected[0]

    def list_contacts(self, phone: str, offset: int, count: int) -> tuple[int, list[dict[str, Any]]]:
        return self.store.list_contacts(self._listed_phone(phone), max(0, offset), max(1, min(count or 50, 500)))

    def favourites(self, phone: str) -> list[dict[str, Any]]:
        return self.store.favourites(self._listed_phone(phone))

    def letter_index(self, phone: str) -> list[tuple[str, int]]:
        return self.store.letter_index(self._listed_phone(phone))

    def history(self, phone: str, limit: int) -> list[dict[str, Any]]:
        self.ctx.services.require("contacts")
        if phone:
            phone = phone.upper()
        else:
            connected = self._connected_phones()
            if not connected:
                raise NotConnected("no phone is connected")
            phone = connected[0]
        rows = self.store.history(phone, max(1, min(limit or 50, 1000)))
        for r in rows:
            m = self.index.lookup(phone, r["number"]) if r["number"] else None
            r["contact_id"] = m.contact_id if m else 0
            if not r["name"] and m is not None:
                r["name"] = m.name
            r["phone"] = phone
        return rows

    # ------------------------------------------------------------------ phones coming and going

    def _eligible(self, link: PhoneLink) -> bool:
        return link.role == "primary" or self.cfg.sync_secondary

    def _on_directory(self, event: str, link: PhoneLink) -> None:
        if event in ("connected", "changed"):
            self._consider(link)
        elif event == "disconnected":
            self._drop(link.address)
            if self.cfg.wipe_on_disconnect:
                self._wipe(link.address)
            else:
                self._set(link.address, state="idle", book="", done=0, total=0, message="")
        elif event == "forgotten":
            self._drop(link.address)
            self._wipe(link.address)
            self._status.pop(link.address, None)

    def _consider(self, link: PhoneLink) -> None:
        if not self._running:
            return
        ps = self._phones.get(link.address)
        if not self._eligible(link):
            if ps is not None:
                self._drop(link.address)
                self._set(link.address, state="idle", message="")
            return
        if link.uuids and names.UUID_PBAP_PSE not in link.uuids:
            self._set(link.address, state="unsupported", message="the phone does not offer its contacts (no PBAP)")
            return
        if ps is None:
            ps = self._phones[link.address] = _PhoneSync(link)
        ps.link = link
        if ps.task is None or ps.task.done():
            ps.task = asyncio.get_running_loop().create_task(self._phone_loop(ps), name=f"pbap:{link.address}")

    def _drop(self, address: str) -> None:
        ps = self._phones.pop(address, None)
        if ps is not None:
            if ps.trailing is not None:
                ps.trailing.cancel()
            if ps.task is not None:
                ps.task.cancel()

    def _wipe(self, address: str) -> None:
        try:
            self.store.wipe_phone(address)
        except Exception:
            log.exception("could not delete the contacts of %s", redact_address(address))
        self.index.drop_phone(address)
        self._status.pop(address, None)
        self._set(address, state="idle", contacts=0, history=0, last_synced=0.0, message="", done=0, total=0)

    # ------------------------------------------------------------------ the per-phone loop

    def _delay(self, ladder: Sequence[float], attempt: int) -> float:
        if not ladder:
            return 1.0
        base = float(ladder[min(attempt, len(ladder) - 1)])
        return base * (0.5 + 0.5 * self._rng.random())  # jitter: phones reconnecting together

    async def _phone_loop(self, ps: _PhoneSync) -> None:
        address = ps.link.address
        failures = 0
        permission_tries = 0
        refused_since: float | None = None  # the phone has refused access since (monotonic)
        while True:
            if not self._obexd_up.is_set():
                self._set(address, state="waiting", message="obexd is not running")
                await self._obexd_up.wait()
            force, ps.force = ps.force, False
            ps.wake.clear()
            try:
                await self._sync_once(ps, force=force)
            except asyncio.CancelledError:
                await self._remove_session(ps)
                raise
            except SyncError as exc:
                await self._remove_session(ps)
                if exc.obexd_gone:
                    log.info("contacts of %s: obexd went away mid-sync; will retry when it is back",
                             redact_address(address))
                    self._set(address, state="waiting", message="obexd is not running")
                    continue
                if exc.permission:
                    now = time.monotonic()
                    refused_since = now if refused_since is None else refused_since
                    if now - refused_since >= self.cfg.permission_timeout:
                        # Still refused long after the phone asked: the user said no (or never
                        # will). Stop asking; a Resync (wake) or a reconnect (a new loop) tries again.
                        log.info("contacts of %s: the phone refused access for %.0fs: denied; not retried "
                                 "until it reconnects or a re-sync", redact_address(address), now - refused_since)
                        self._set(address, state="denied", message=DENIED_MESSAGE)
                        await ps.wake.wait()
                        refused_since, permission_tries = None, 0
                        continue
                    delay = self._delay(self.cfg.permission_retry_delays, permission_tries)
                    permission_tries += 1
                    log.info("contacts of %s: the phone asks the user for permission; retry in %.1fs",
                             redact_address(address), delay)
                    self._set(address, state="permission-pending", message=PERMISSION_MESSAGE)
                else:
                    delay = self._delay(self.cfg.retry_delays, failures)
                    failures += 1
                    log.warning("contacts of %s: sync failed (%s); retry %d in %.1fs", redact_address(address),
                                exc.message, failures, delay)
                    self._set(address, state="retrying", message=exc.message)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await ps.wake.wait()  # a Resync skips the wait
                continue
            except Exception as exc:  # a bug: log it, keep the phone's old data, try again later
                await self._remove_session(ps)
                log.exception("contacts of %s: unexpected error", redact_address(address))
                self._set(address, state="retrying", message=f"internal error: {type(exc).__name__}")
                delay = self._delay(self.cfg.retry_delays, failures)
                failures += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await ps.wake.wait()
                continue
            await self._remove_session(ps)
            failures = permission_tries = 0
            refused_since = None
            await ps.wake.wait()  # until Resync

    async def _sync_once(self, ps: _PhoneSync, *, force: bool) -> None:
        address = ps.link.address
        if not self.store.phone_known(address):
            raise SyncError("the phone is not in the paired-phones registry yet")
        self._set(address, state="connecting", book="", done=0, total=0, message="")
        ps.budget = MAX_PHONE_BYTES
        t0 = time.monotonic()
        session = await self._create_session(ps)
        staged: dict[str, Counters] = {}
        unchanged: list[str] = []
        total_done = 0
        try:
            books = ["pb", "fav"] if self.cfg.favourites else ["pb"]
            for book in books:
                try:
                    size = await self._select_and_size(session, book)
                except SyncError as exc:
                    if book == "fav" and not exc.permission and not exc.obexd_gone:
                        log.debug("no favourites on %s: %s", redact_address(address), exc.message)
                        continue
                    raise
                counters = await self._counters(session)
                old = self.store.book_state(address, book)
                if (not force and old is not None and counters.known and old.counters == counters):
                    unchanged.append(book)
                    log.info("contacts of %s: %s unchanged (PBAP counters)", redact_address(address), book)
                    continue
                n, staged[book] = await self._pull_book(ps, session, book, size, counters, total_done)
                total_done += n
            histories: dict[str, list[VCard]] = {}
            if self.cfg.call_history:
                for book in HISTORY_BOOKS:
                    try:
                        await self._select_and_size(session, book)
                    except SyncError as exc:
                        if exc.permission or exc.obexd_gone:
                            raise
                        log.debug("no %s on %s: %s", book, redact_address(address), exc.message)
                        continue
                    self._set(address, progress=True, state="syncing", book=book)
                    calls: list[VCard] = []
                    await self._pull_page(session, book, 0, self.cfg.history_limit, HISTORY_FIELDS, photos=False,
                                          sink=calls.extend, ps=ps)
                    histories[book] = calls[:max(1, self.cfg.history_limit)]
            contacts, history = self.store.commit(address, staged, histories, unchanged)
        except BaseException:
            for book in ("pb", "fav"):
                with contextlib.suppress(Exception):
                    self.store.abort_snapshot(address, book)
            raise
        if staged or histories:
            self._reindex(address)
        log.info("contacts of %s synced in %.2fs: %d contacts, %d calls%s", redact_address(address),
                 time.monotonic() - t0, contacts, history, " (phonebook unchanged)" if unchanged and not staged else "")
        self._set(address, state="synced", book="", done=total_done, total=total_done, message="",
                  contacts=contacts, history=history, last_synced=time.time())

    # ------------------------------------------------------------------ obexd operations

    async def _call(self, path: str, iface: str, member: str, sig: str = "", body: Sequence[Any] = (),
                    timeout: float | None = None) -> list[Any]:
        owner = self._owner
        if owner is None:
            raise SyncError("obexd is not running", obexd_gone=True)
        try:
            return await dbus_call(self.bus, names.OBEX_NAME, path, iface, member, sig, body,
                                   timeout=timeout or self.cfg.call_timeout)
        except Forbidden as exc:
            raise SyncError(f"{member}: {exc.text or 'Forbidden'}", permission=True) from None
        except Failed as exc:
            if "forbidden" in exc.text.lower() or "unauthorized" in exc.text.lower():
                raise SyncError(f"{member}: {exc.text}", permission=True) from None
            raise SyncError(f"{member} failed: {exc.text or exc.name}") from None
        except ServiceGone as exc:
            raise SyncError(f"{member}: obexd went away", obexd_gone=self._owner is None
                            or exc.name == names.ERR_SERVICE_UNKNOWN) from None
        except CallTimeout:
            raise SyncError(f"{member}: the phone did not answer within {timeout or self.cfg.call_timeout:g}s") \
                from None
        except BusError as exc:
            raise SyncError(f"{member}: {exc.name.rsplit('.', 1)[-1]} {exc.text}".strip()) from None

    async def _create_session(self, ps: _PhoneSync) -> str:
        try:
            (path,) = await self._call(names.OBEX_ROOT, names.OBEX_CLIENT_IFACE, "CreateSession", "sa{sv}",
                                       [ps.link.address, {"Target": Variant("s", "pbap")}],
                                       timeout=self.cfg.connect_timeout)
        except SyncError as exc:
            if "did not answer" in exc.message:  # Android asks "allow access?" while connecting
                raise SyncError("the phone did not accept the phonebook connection (is it asking to allow"
                                " access to contacts?)") from None
            raise
        ps.session = str(path)
        self._sessions.add(ps.session)
        return ps.session

    async def _remove_session(self, ps: _PhoneSync) -> None:
        session, ps.session = ps.session, None
        if session is None:
            return
        self._sessions.discard(session)
        for p in [p for p in self._early if p.startswith(session + "/")]:
            self._early.pop(p, None)
        if self._owner is None or not self.bus.connected:
            return
        with contextlib.suppress(BusError):
            await dbus_call(self.bus, names.OBEX_NAME, names.OBEX_ROOT, names.OBEX_CLIENT_IFACE, "RemoveSession",
                            "o", [session], timeout=REMOVE_SESSION_TIMEOUT_S)

    async def _select_and_size(self, session: str, book: str) -> int:
        await self._call(session, names.OBEX_PBAP_IFACE, "Select", "ss", ["int", book])
        (size,) = await self._call(session, names.OBEX_PBAP_IFACE, "GetSize")
        return int(size)

    async def _counters(self, session: str) -> Counters:
        (props,) = await self._call(session, names.PROPERTIES_IFACE, "GetAll", "s", [names.OBEX_PBAP_IFACE])
        p = unwrap_props(props)
        primary = str(p.get("PrimaryCounter", ""))
        secondary = str(p.get("SecondaryCounter", ""))
        db = str(p.get("DatabaseIdentifier", ""))
        if primary == ZERO_COUNTER and secondary == ZERO_COUNTER:
            return Counters("", "", db)  # not known (PBAP 1.1 phone, or nothing learnt)
        return Counters(primary, secondary, db)

    async def _pull_book(self, ps: _PhoneSync, session: str, book: str, size: int, counters: Counters,
                         done_before: int) -> tuple[int, Counters]:
        """Page through ``book`` into the staging book: (contacts staged, the counters they match)."""
        address = ps.link.address
        page = max(1, min(self.cfg.page_size, 65535))
        for restart in range(MAX_BOOK_RESTARTS + 1):
            self.store.begin_snapshot(address, book)
            seen: set[Any] = set()
            staged = 0
            offset = 0
            expected = max(0, size - 1) if book == "pb" else size  # owner card not counted
            self._set(address, state="syncing", book=book, done=done_before, total=done_before + expected)
            while True:
                page_staged = 0
                owner = offset == 0 and book == "pb"

                def take(cards: list[VCard], seen: set[Any] = seen, start: int = offset) -> None:
                    # one batch of the page, staged as it is parsed (the page is never held whole)
                    nonlocal owner, page_staged
                    if owner and cards:
                        cards, owner = cards[1:], False  # 0.vcf: the phone owner's own card
                    unique = []
                    for c in cards:
                        key = c.uid or (c.display_name, tuple(t.number for t in c.tels),
                                        tuple(e.address for e in c.emails))
                        if key in seen:
                            continue  # the phone sent the same entry twice (book changed between pages)
                        seen.add(key)
                        unique.append(c)
                    page_staged += self.store.stage(address, book, start + page_staged, unique)

                received, _, over = await self._pull_page(session, book, offset, page, CONTACT_FIELDS,
                                                          photos=self.cfg.photos, sink=take, ps=ps)
                staged += page_staged
                offset += page
                self._set(address, progress=True, state="syncing", book=book, done=done_before + staged,
                          total=done_before + max(expected, staged))
                if over:
                    log.warning("contacts of %s: %s over the %d MiB budget; the rest is not kept",
                                redact_address(address), book, MAX_PHONE_BYTES >> 20)
                    break
                if received != page or offset >= 65535:
                    break  # a short page is the end, whatever GetSize said; a long one means the
                    # phone ignored MaxCount and sent everything
                if offset >= size and received == 0:
                    break
            # The book changed while we paged (entries shift between pages): pull it again.
            (new_size,) = await self._call(session, names.OBEX_PBAP_IFACE, "GetSize")
            new_counters = await self._counters(session)
            moved = counters.known and new_counters.known and new_counters != counters
            if (int(new_size) == size and not moved) or restart == MAX_BOOK_RESTARTS:
                return staged, new_counters if new_counters.known else counters
            log.info("contacts of %s: %s changed during the pull; pulling again", redact_address(address), book)
            size, counters = int(new_size), new_counters
        raise AssertionError("not reached")

    async def _pull_page(self, session: str, book: str, offset: int, count: int, fields: Sequence[str], *,
                         photos: bool, sink: Callable[[list[VCard]], None], ps: _PhoneSync | None = None
                         ) -> tuple[int, int, bool]:
        """One PullAll, streamed: the file obexd wrote is parsed card by card (in a worker thread),
        and each batch of at most ``BATCH_BYTES`` of cards goes to ``sink`` on the loop.  Reading
        stops once ``MAX_PAGE_BYTES`` of cards (by :func:`card_cost`, what the store keeps) were
        taken, or what is left of the phone's ``MAX_PHONE_BYTES``.
        Returns (cards received, malformed cards skipped, over the byte budget)."""
        flds = list(fields) + (["PHOTO"] if photos else [])
        filters = {"Format": Variant("s", "vcard30"), "Offset": Variant("q", min(offset, 65535)),
                   "MaxCount": Variant("q", max(1, min(count, 65535))), "Fields": Variant("as", flds)}
        target = self.transfers.new_target("pbap")
        try:
            path, props = await self._call(session, names.OBEX_PBAP_IFACE, "PullAll", "sa{sv}", [target, filters])
        except BaseException:
            TransferDir.discard(target)
            raise
        path = str(path)
        props = unwrap_props(props)
        filename = str(props.get("Filename", ""))
        try:
            await self._wait_transfer(path, str(props.get("Status", "queued")))
            if not filename:
                raise SyncError("obexd did not say where it wrote the phonebook")
            budget = MAX_PAGE_BYTES if ps is None else max(0, min(MAX_PAGE_BYTES, ps.budget))
            reader = CardReader(filename, VCardParser(photo_max_bytes=min(self.cfg.photo_max_bytes, MAX_PHOTO_BYTES),
                                                      keep_photos=self.cfg.photos and photos,
                                                      digest_salt=self.store.digest_salt), budget)
            try:
                while not reader.done:
                    batch = await asyncio.to_thread(reader.next_batch)
                    if batch:
                        sink(batch)
            finally:
                reader.close()
                if ps is not None:
                    ps.budget -= reader.kept
        finally:
            TransferDir.discard(target)  # always, whatever obexd answered
            if filename and filename != target:
                await asyncio.to_thread(_unlink, filename)
        errors = reader.errors
        if errors:
            log.warning("contacts: %d malformed vCard(s) skipped in %s (first: %s)", len(errors), book,
                        errors[0].reason)
        return reader.cards + len(errors), len(errors), reader.over

    async def _wait_transfer(self, path: str, status: str) -> None:
        """Until ``complete`` (returns) or ``error``/removal/obexd gone/no progress (raises)."""
        t = _Transfer(path, status)
        self._transfers[path] = t
        generation = self._obexd_generation
        for kind, props in self._early.pop(path, []):
            t.apply(kind, props)
        try:
            last = (t.status, t.transferred)
            while True:
                if t.status == "complete":
                    return
                if t.status == "error":
                    raise SyncError("the phone transfer failed")
                if t.removed:
                    raise SyncError("the transfer vanished before it completed")
                if self._obexd_generation != generation or self._owner is None:
                    raise SyncError("obexd went away during a transfer", obexd_gone=True)
                t.event.clear()
                try:
                    async with asyncio.timeout(self.cfg.stall_timeout):
                        while True:
                            await t.event.wait()
                            t.event.clear()
                            now = (t.status, t.transferred)
                            if now != last or t.removed or self._obexd_generation != generation:
                                last = now
                                break
                except TimeoutError:
                    with contextlib.suppress(SyncError):
                        await self._call(path, names.OBEX_TRANSFER_IFACE, "Cancel", timeout=2.0)
                    raise SyncError(f"no progress from the phone for {self.cfg.stall_timeout:g}s") from None
        finally:
            self._transfers.pop(path, None)

    # ------------------------------------------------------------------ obexd signals

    def _owner_changed(self, owner: str | None) -> None:
        self._owner = owner
        self._obexd_generation += 1
        if owner:
            self._obexd_up.set()
            self.ctx.health.set(self.name, "ok")
        else:
            self._obexd_up.clear()
            self._early.clear()
            for t in list(self._transfers.values()):
                t.event.set()  # waiting transfers notice the generation change
            if self._running:
                self.ctx.health.set(self.name, "degraded", "obexd is not running")

    def _ours(self, path: str) -> bool:
        return any(path.startswith(s + "/") for s in self._sessions)

    def _record(self, path: str, kind: str, props: dict[str, Any]) -> None:
        t = self._transfers.get(path)
        if t is not None:
            t.apply(kind, props)
        elif self._ours(path):
            early = self._early.setdefault(path, [])
            if len(early) < 64:
                early.append((kind, props))

    def _on_properties(self, msg: Message) -> None:
        try:
            iface, changed, _inv = msg.body
        except (ValueError, TypeError):
            return
        if iface != names.OBEX_TRANSFER_IFACE or not msg.path:
            return
        self._record(msg.path, "changed", {k: unwrap(v) for k, v in changed.items()})

    def _on_removed(self, msg: Message) -> None:
        try:
            path, ifaces = msg.body
        except (ValueError, TypeError):
            return
        if names.OBEX_TRANSFER_IFACE in ifaces:
            self._record(str(path), "removed", {})


class CardReader:
    """One transfer file, parsed card by card a batch at a time (:meth:`next_batch` runs in a
    worker thread; one at a time).  Memory: the parser's bounded buffers plus one batch of at most
    ``BATCH_BYTES`` of cards (by :func:`card_cost`) and about ``BATCH_CARDS`` cards (one chunk's worth
    more at most).  At most ``budget`` bytes of cards are kept
    (what the store would hold): beyond, ``over`` is set and the rest of the file is left unread.
    Bytes the parser drops on the fly (a photo over the cap) do not count."""

    def __init__(self, filename: str, parser: VCardParser, budget: int) -> None:
        self.filename = filename
        self.parser = parser
        self.budget = budget
        self.kept = 0  # card_cost of the cards handed out
        self.cards = 0
        self.over = False
        self.done = False
        self.errors: list[CardError] = []
        self._fh: Any = None

    def next_batch(self) -> list[VCard]:
        batch: list[VCard] = []
        cost = 0
        try:
            if self._fh is None and not self.done:
                self._fh = open(self.filename, "rb")  # noqa: SIM115 - closed by close()/at the end
            while not self.done and cost < BATCH_BYTES and len(batch) < BATCH_CARDS:
                chunk = self._fh.read(READ_CHUNK)
                cards = self.parser.feed(chunk) if chunk else self.parser.close()
                for card in cards:
                    c = card_cost(card)
                    if self.kept + c > self.budget:
                        self.over = True
                        break
                    self.kept += c
                    cost += c
                    batch.append(card)
                if self.over or not chunk:
                    self.done = True
                    self.close()
        except OSError as exc:
            self.close()
            raise SyncError(f"cannot read the phonebook obexd wrote ({exc.strerror})") from None
        self.errors.extend(self.parser.take_errors())
        self.cards += len(batch)
        return batch

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()


def card_cost(card: VCard) -> int:
    """Roughly the bytes a parsed card holds (its fields are capped: see ``profiles/limits.py``)."""
    return (256 + len(card.fn) + sum(len(x) for x in card.n) + 64 * (len(card.tels) + len(card.emails))
            + sum(len(a.formatted()) for a in card.addresses) + (len(card.photo) if card.photo else 0))


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
