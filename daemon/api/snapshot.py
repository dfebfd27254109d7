"""``org.dashbridge.Daemon1.GetSnapshot``: everything a dashboard draws, in one call, with the
generation a dashboard compares signals against.

The state is collected from the exported adapters (each reads its port, never a component): every
readable property of each ``org.dashbridge.*`` interface (except the ones an adapter withholds,
``SNAPSHOT_WITHHELD``: ``Cloud1.LinkCode`` is never broadcast), plus what the adapter adds with
``snapshot_extra()`` (the phones, prompts, calls, messages summary, pending intents ...), plus
sources registered for a port directly (the contacts sync states).  Keyed by the short interface
name: ``{"Phones1": {...}, "Calls1": {...}, ...}``.

Generation: the D-Bus serial the daemon's connection reserves right after the state was read.
Every message the daemon sends — every signal — carries a serial of its own, strictly increasing;
the snapshot is read and the reply sent in one go on the event loop (no await between them), so a
signal with a serial lower than the generation is already reflected in the snapshot and one with a
higher serial is not.  docs/dbus-api.md says how a dashboard uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from dbus_fast import Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from ..errors import DashbridgeError
from .contacts import status_props

if TYPE_CHECKING:
    from .ports import ContactsPort

log = logging.getLogger(__name__)

State = dict[str, Variant]
_SKIPPED = frozenset({"org.dashbridge.CloudTestClock1"})


def properties_of(iface: ServiceInterface, withheld: frozenset[str] = frozenset()) -> State:
    """Every readable property of an exported interface, as ``Properties.GetAll`` would give it."""
    out: State = {}
    for prop in ServiceInterface._get_properties(iface):
        if prop.disabled or not prop.access.readable() or prop.name in withheld:
            continue
        out[prop.name] = Variant(prop.signature, getattr(iface, prop.prop_getter.__name__))
    return out


def contacts_state(port: ContactsPort) -> Callable[[], State]:
    """``Contacts1`` has no properties: its sync states, as ``GetSyncStates`` gives them."""
    return lambda: {"SyncStates": Variant("aa{sv}", [status_props(st) for st in port.statuses()])}


class Snapshot:
    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._sources: list[tuple[str, Callable[[], State]]] = []

    def add(self, key: str, source: Callable[[], State]) -> None:
        self._sources.append((key, source))

    def add_interface(self, iface: ServiceInterface) -> None:
        if not iface.name.startswith("org.dashbridge.") or iface.name in _SKIPPED:
            return
        withheld: frozenset[str] = getattr(iface, "SNAPSHOT_WITHHELD", frozenset())
        extra: Callable[[], State] | None = getattr(iface, "snapshot_extra", None)

        def source() -> State:
            state = properties_of(iface, withheld)
            if extra is not None:
                state.update(extra())
            return state

        self.add(iface.name.removeprefix("org.dashbridge."), source)

    def take(self) -> tuple[int, dict[str, Variant]]:
        """(generation, state); synchronous on purpose — see the module docstring."""
        state: dict[str, State] = {}
        for key, source in self._sources:
            part = state.setdefault(key, {})
            try:
                part.update(source())
            except DashbridgeError as exc:  # e.g. a gated feature: say so instead of failing it all
                part["Unavailable"] = Variant("s", f"{exc.code}: {exc.message}")
            except Exception as exc:
                log.error("snapshot of %s failed", key, exc_info=exc)
                part["Unavailable"] = Variant("s", "internal error (see the daemon's log)")
        generation = self.bus.next_serial()
        return generation, {k: Variant("a{sv}", v) for k, v in state.items()}
