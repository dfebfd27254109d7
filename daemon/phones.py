"""The in-process directory of connected phones: the bluetooth component writes it, the profile
components (HFP, PBAP, MAP) read it and listen to it.  One way: bluetooth -> directory -> profiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

Role = Literal["primary", "secondary"]
Event = Literal["connected", "disconnected", "changed", "forgotten"]


@dataclass(frozen=True)
class PhoneLink:
    address: str  # "AA:BB:CC:DD:EE:FF"
    name: str
    device_path: str  # BlueZ object path
    role: Role  # primary: all profiles; secondary: calls only
    uuids: frozenset[str]


Listener = Callable[[Event, PhoneLink], None]


class PhoneDirectory:
    def __init__(self) -> None:
        self._connected: dict[str, PhoneLink] = {}
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def connected(self) -> dict[str, PhoneLink]:
        return dict(self._connected)

    def primary(self) -> PhoneLink | None:
        for link in self._connected.values():
            if link.role == "primary":
                return link
        return None

    def get(self, address: str) -> PhoneLink | None:
        return self._connected.get(address.upper())

    def _emit(self, event: Event, link: PhoneLink) -> None:
        for cb in list(self._listeners):
            try:
                cb(event, link)
            except Exception:
                log.exception("phone directory listener failed on %s", event)

    def set_connected(self, link: PhoneLink) -> None:
        old = self._connected.get(link.address)
        self._connected[link.address] = link
        if old is None:
            self._emit("connected", link)
        elif old != link:
            self._emit("changed", link)

    def set_disconnected(self, address: str) -> None:
        link = self._connected.pop(address.upper(), None)
        if link is not None:
            self._emit("disconnected", link)

    def forgotten(self, address: str, name: str = "") -> None:
        """The phone was forgotten: listeners drop everything they hold about it."""
        link = self._connected.pop(address.upper(), None) or PhoneLink(
            address.upper(), name, "", "secondary", frozenset())
        self._emit("forgotten", link)


async def follow(directory: PhoneDirectory, events: asyncio.Queue[tuple[Event, PhoneLink]],
                 on_event: Callable[[Event, PhoneLink], None], tasks: dict[str, asyncio.Task[None]]) -> None:
    """A component's per-phone loop: the phones connected now as ``connected``, then every event of
    the directory (queued in ``events`` by its listener) to ``on_event``, until cancelled; then the
    component's per-phone ``tasks`` are cancelled and awaited."""
    for link in directory.connected.values():
        events.put_nowait(("connected", link))
    try:
        while True:
            event, link = await events.get()
            on_event(event, link)
    finally:
        for t in list(tasks.values()):
            t.cancel()
        for t in list(tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        tasks.clear()
