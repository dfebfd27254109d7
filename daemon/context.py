"""What the composition root hands to every component: config, buses, store, health, events.

Components get this at construction; they never reach for globals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from dbus_fast.aio import MessageBus

from .config import Config
from .dbus.signals import SignalRouter
from .health import Health
from .services import Services
from .store import Store


class Component(Protocol):
    """A long-lived part of the daemon, run under the supervisor."""

    name: str

    async def run(self) -> None:
        """Runs until cancelled; raising makes the supervisor restart it with backoff."""
        ...


@dataclass
class AppContext:
    config: Config
    system_bus: MessageBus
    session_bus: MessageBus
    system: SignalRouter
    session: SignalRouter
    store: Store
    health: Health
    # Services components offer each other (set by the composition root, read by others).
    services: Services = field(default_factory=Services)
    # Who may call the objects the daemon exports for foreign daemons (the pairing agent): each
    # predicate says whether a unique bus name is such a daemon now (e.g. the owner of org.bluez).
    system_peers: list[Callable[[str], bool]] = field(default_factory=list)
    # Clean-up callbacks run at shutdown, newest first.
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
