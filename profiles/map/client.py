"""The MAP side of obexd, as seen from the daemon: sessions, listings, message downloads, status
changes and pushes, every call with a deadline (reference §2.1-2.8, §8 items 4-6).

* One :class:`ObexTracker` per component mirrors obexd's object tree (subscribed before
  ``GetManagedObjects``, rebuilt when obexd restarts) and records transfer outcomes, so a
  transfer that completed before its ``Get`` reply was processed is not missed (§8 item 5); an
  InterfacesRemoved without a final status, or obexd leaving, counts as a failed transfer.
* :class:`MapSession` wraps one ``map`` session: the typed filter dicts obexd insists on (§8 item 6:
  ``MaxCount`` is ``q``), downloads that read and then delete obexd's temp file (§8 item 4), at most
  ``max_bytes`` of it, and pushes from a file of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbus_fast import Variant

from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.call import call, unwrap_props
from dashbridge.daemon.dbus.errors import BusError
from dashbridge.daemon.dbus.mirror import ObjectManagerMirror
from dashbridge.daemon.dbus.signals import SignalRouter
from dashbridge.daemon.transfers import TransferDir

log = logging.getLogger(__name__)

_KEEP_OUTCOMES = 512


class TransferFailed(Exception):
    """A transfer ended in ``error``, vanished without a final status, or stalled."""


@dataclass
class _Waiter:
    done: asyncio.Event = field(default_factory=asyncio.Event)
    status: str = ""
    progress: asyncio.Event = field(default_factory=asyncio.Event)


class ObexTracker:
    """obexd's objects (via the mirror) and the outcome of every transfer."""

    def __init__(self, router: SignalRouter, *, timeout: float) -> None:
        self.mirror = ObjectManagerMirror(router, names.OBEX_NAME, "/", timeout=timeout)
        self.mirror.add_listener(self._on_change)
        self._outcomes: OrderedDict[str, str] = OrderedDict()
        self._waiters: dict[str, _Waiter] = {}
        self.listeners: list[Callable[[str, str, str, dict[str, Any]], None]] = []

    def _finish(self, path: str, status: str) -> None:
        if path in self._outcomes:
            return
        self._outcomes[path] = status
        while len(self._outcomes) > _KEEP_OUTCOMES:
            self._outcomes.popitem(last=False)
        w = self._waiters.get(path)
        if w is not None:
            w.status = status
            w.done.set()

    def _on_change(self, kind: str, path: str, iface: str, props: dict[str, Any]) -> None:
        if kind == "reset":
            for p in list(self._waiters):
                self._finish(p, "error")
        elif iface == names.OBEX_TRANSFER_IFACE:
            if kind in ("added", "changed"):
                w = self._waiters.get(path)
                if w is not None:
                    w.progress.set()
                status = props.get("Status")
                if status in ("complete", "error"):
                    self._finish(path, str(status))
            elif kind == "removed":
                self._finish(path, "error")  # gone without a final status (§8 item 5)
        for cb in list(self.listeners):
            try:
                cb(kind, path, iface, props)
            except Exception:
                log.exception("obex listener failed")

    async def wait_transfer(self, path: str, idle_timeout: float) -> None:
        """Until ``path`` completes; TransferFailed on error, disappearance or no progress for
        ``idle_timeout`` seconds (a progress-based deadline: big downloads may take long)."""
        w = self._waiters.setdefault(path, _Waiter())
        try:
            if path in self._outcomes:
                w.status = self._outcomes[path]
                w.done.set()
            while not w.done.is_set():
                w.progress.clear()
                done = asyncio.ensure_future(w.done.wait())
                prog = asyncio.ensure_future(w.progress.wait())
                try:
                    finished, _ = await asyncio.wait({done, prog}, timeout=idle_timeout,
                                                     return_when=asyncio.FIRST_COMPLETED)
                finally:
                    done.cancel()
                    prog.cancel()
                if not finished:
                    raise TransferFailed(f"no progress for {idle_timeout:g}s")
            if w.status != "complete":
                raise TransferFailed(f"transfer ended with status {w.status or 'unknown'}")
        finally:
            self._waiters.pop(path, None)


class MapSession:
    """One obexd ``map`` session for one phone."""

    def __init__(self, bus: Any, tracker: ObexTracker, address: str, *, call_timeout: float,
                 connect_timeout: float, idle_timeout: float, max_bytes: int, spool: Path,
                 transfers: TransferDir) -> None:
        self.bus = bus
        self.tracker = tracker
        self.address = address
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_bytes = max_bytes
        self.spool = spool
        self.transfers = transfers  # obexd writes each message there, never in its own /tmp
        self.path: str | None = None
        self.supported_types: list[str] = []

    async def _call(self, path: str, iface: str, member: str, sig: str = "", body: list[Any] | None = None,
                    *, timeout: float | None = None) -> list[Any]:
        return await call(self.bus, names.OBEX_NAME, path, iface, member, sig, body or [],
                          timeout=timeout or self.call_timeout)

    # -- session ---------------------------------------------------------------------------------
    async def open(self) -> str:
        (path,) = await self._call(names.OBEX_ROOT, names.OBEX_CLIENT_IFACE, "CreateSession", "sa{sv}",
                                   [self.address, {"Target": Variant("s", "map")}], timeout=self.connect_timeout)
        self.path = str(path)
        props = self.tracker.mirror.get(self.path, names.OBEX_MAP_IFACE)
        if props is None:
            try:
                (raw,) = await self._call(self.path, names.PROPERTIES_IFACE, "GetAll", "s", [names.OBEX_MAP_IFACE])
                props = unwrap_props(raw)
            except BusError:
                props = {}
        types = props.get("SupportedTypes")
        self.supported_types = [t for t in types if isinstance(t, str)] if isinstance(types, list) else []
        return self.path

    async def close(self) -> None:
        path, self.path = self.path, None
        if path is None:
            return
        with contextlib.suppress(BusError):
            await self._call(names.OBEX_ROOT, names.OBEX_CLIENT_IFACE, "RemoveSession", "o", [path], timeout=2.0)

    def _session(self) -> str:
        if self.path is None:
            raise BusError(names.ERR_DISCONNECTED, "no MAP session")
        return self.path

    def message_path(self, handle: str) -> str:
        return f"{self._session()}/message{handle}"

    # -- browsing --------------------------------------------------------------------------------
    async def set_folder(self, folder: str) -> None:
        await self._call(self._session(), names.OBEX_MAP_IFACE, "SetFolder", "s", [folder])

    async def list_folders(self) -> list[str]:
        (entries,) = await self._call(self._session(), names.OBEX_MAP_IFACE, "ListFolders", "a{sv}",
                                      [{"MaxCount": Variant("q", 64)}])
        out = []
        for e in entries:
            name = unwrap_props(e).get("Name")
            if isinstance(name, str) and name:
                out.append(name)
        return out

    async def list_messages(self, folder: str, *, max_count: int, period_begin: str = "",
                            period_end: str = "", types: list[str] | None = None) -> dict[str, dict[str, Any]]:
        filters: dict[str, Variant] = {"MaxCount": Variant("q", max(0, min(max_count, 65535))),
                                       "SubjectLength": Variant("y", 255)}
        if period_begin:
            filters["PeriodBegin"] = Variant("s", period_begin)
        if period_end:
            filters["PeriodEnd"] = Variant("s", period_end)
        if types:
            filters["Types"] = Variant("as", types)
        (listing,) = await self._call(self._session(), names.OBEX_MAP_IFACE, "ListMessages", "sa{sv}",
                                      [folder, filters])
        return {str(p): unwrap_props(props) for p, props in listing.items()}

    async def update_inbox(self) -> None:
        await self._call(self._session(), names.OBEX_MAP_IFACE, "UpdateInbox")

    # -- messages --------------------------------------------------------------------------------
    async def get_message(self, handle: str) -> tuple[bytes, bool]:
        """Download one message: (bytes, truncated).  The file obexd wrote is always removed."""
        path = self.message_path(handle)
        target = self.transfers.new_target("map")
        try:
            transfer, props = await self._call(path, names.OBEX_MESSAGE_IFACE, "Get", "sb", [target, False])
        except BaseException:
            TransferDir.discard(target)
            raise
        filename = unwrap_props(props).get("Filename")
        try:
            await self.tracker.wait_transfer(str(transfer), self.idle_timeout)
            if not isinstance(filename, str) or not filename:
                raise TransferFailed("obexd gave no file name")
            return await asyncio.to_thread(_read_capped, filename, self.max_bytes)
        finally:
            TransferDir.discard(target)
            if isinstance(filename, str) and filename and filename != target:
                with contextlib.suppress(OSError):
                    os.unlink(filename)

    async def set_read(self, handle: str, read: bool) -> None:
        await self._call(self.message_path(handle), names.PROPERTIES_IFACE, "Set", "ssv",
                         [names.OBEX_MESSAGE_IFACE, "Read", Variant("b", read)])

    async def delete(self, handle: str) -> None:
        await self._call(self.message_path(handle), names.PROPERTIES_IFACE, "Set", "ssv",
                         [names.OBEX_MESSAGE_IFACE, "Deleted", Variant("b", True)])

    async def push(self, data: bytes, folder: str = "outbox") -> None:
        """PushMessage a bMessage; returns when the phone accepted it (TransferFailed if not)."""
        self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="push-", suffix=".bmsg", dir=self.spool)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            transfer, _props = await self._call(
                self._session(), names.OBEX_MAP_IFACE, "PushMessage", "ssa{sv}",
                [name, folder, {"Charset": Variant("s", "utf8"), "Retry": Variant("b", True)}])
            await self.tracker.wait_transfer(str(transfer), self.idle_timeout)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)  # obexd never deletes a push's source file


def _read_capped(filename: str, max_bytes: int) -> tuple[bytes, bool]:
    with open(filename, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        return data[:max_bytes], True
    return data, False
