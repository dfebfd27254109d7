"""Watch who owns a bus name, so components learn when bluetoothd/obexd/ofonod/a client come and go.

Subscribe to ``NameOwnerChanged(arg0=name)`` first, then ask ``GetNameOwner`` — no window in
which an owner change could be missed.  Signals that arrive while the question is out are
buffered (as ``mirror.py`` buffers around ``GetManagedObjects``) and applied on top of the answer:
a ``NameOwnerChanged`` and the reply can be read in one batch, the signal handled before the
awaiting coroutine resumes, so applying the reply last would put a stale owner over a newer one.
A buffered change applies only if its *old* owner is the one known then: a change older than the
answer is already in it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dbus_fast import Message

from . import names
from .call import call
from .errors import BusError
from .signals import SignalRouter, Subscription

log = logging.getLogger(__name__)

OWNER_TIMEOUT_S = 5.0
OwnerCallback = Callable[[str | None], Awaitable[None] | None]


class NameWatcher:
    """Tracks the unique owner of ``name``; ``owner`` is None while nobody owns it.

    ``on_change(new_owner)`` runs for every change (also owner A -> owner B: a restart without a
    gap), serialised so a slow handler never sees changes out of order.
    """

    def __init__(self, router: SignalRouter, name: str, on_change: OwnerCallback | None = None) -> None:
        self.router = router
        self.name = name
        self.owner: str | None = None
        self._callbacks: list[OwnerCallback] = [on_change] if on_change else []
        self._sub: Subscription | None = None
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._appeared = asyncio.Event()
        self._buffer: list[tuple[str | None, str | None]] | None = None  # (old, new) while asking

    def add_callback(self, cb: OwnerCallback) -> None:
        self._callbacks.append(cb)

    async def start(self) -> None:
        self._sub = await self.router.subscribe(
            self._on_signal,
            sender=names.DBUS_NAME,
            interface=names.DBUS_IFACE,
            member="NameOwnerChanged",
            arg0=self.name,
        )
        self._buffer = []
        try:
            (owner,) = await call(
                self.router.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "GetNameOwner", "s",
                [self.name], timeout=OWNER_TIMEOUT_S,
            )
        except BusError:
            owner = None
        current: str | None = owner or None
        buffered, self._buffer = self._buffer, None
        if current:
            self._queue.put_nowait(current)
        for old, new in buffered:
            if old == current:  # newer than the answer
                self._queue.put_nowait(new)
                current = new
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"watch:{self.name}")

    def _on_signal(self, msg: Message) -> None:
        _name, old, new = msg.body
        if self._buffer is not None:
            self._buffer.append((old or None, new or None))
            return
        self._queue.put_nowait(new or None)

    async def _run(self) -> None:
        while True:
            new = await self._queue.get()
            if new == self.owner:
                continue
            if self.owner is not None and new is not None:
                # A restart without a gap: report the vanish first so state is rebuilt cleanly.
                await self._deliver(None)
            self.owner = new
            if new:
                self._appeared.set()
            else:
                self._appeared.clear()
            await self._deliver(new)

    async def _deliver(self, owner: str | None) -> None:
        for cb in list(self._callbacks):
            try:
                res = cb(owner)
                if res is not None:
                    await res
            except Exception:
                log.exception("owner-change handler for %s failed", self.name)

    async def wait_owner(self, timeout: float) -> str:
        async with asyncio.timeout(timeout):
            await self._appeared.wait()
        assert self.owner is not None
        return self.owner

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._sub:
            await self._sub.close()
