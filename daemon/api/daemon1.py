"""``org.dashbridge.Daemon1`` at ``/org/dashbridge``: version, per-component health, and the
snapshot of everything a dashboard draws (:mod:`daemon.api.snapshot`)."""

from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast.annotations import DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from ... import version
from ..dbus import names
from ..health import Health
from .base import api_call_sync

if TYPE_CHECKING:
    from .snapshot import Snapshot

HealthMap = Annotated[dict[str, list[str]], DBusSignature("a{s(ss)}")]
SnapshotT = Annotated[tuple[int, dict[str, Any]], DBusSignature("ta{sv}")]


class Daemon1(ServiceInterface):
    def __init__(self, health: Health, snapshot: "Snapshot | None" = None) -> None:
        super().__init__(names.DASHBRIDGE_DAEMON_IFACE)
        self._health = health
        self._snapshot = snapshot
        health.on_change(self._health_changed)

    def _health_changed(self) -> None:
        self.emit_properties_changed({"Health": self._health_map(), "Status": self._health.summary()})

    def _health_map(self) -> dict[str, list[str]]:
        return {k: [v.state, v.reason] for k, v in sorted(self._health.snapshot().items())}

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        return version()

    @dbus_property(access=PropertyAccess.READ)
    def Health(self) -> HealthMap:
        return self._health_map()

    @dbus_property(access=PropertyAccess.READ)
    def Status(self) -> DBusStr:
        return self._health.summary()

    @dbus_method()
    def Ping(self) -> DBusStr:
        return "pong"

    # Synchronous on purpose: the state is read and the reply sent without yielding to the loop,
    # so no signal can slip in between (the generation's promise, see daemon/api/snapshot.py).
    @dbus_method()
    @api_call_sync
    def GetSnapshot(self) -> SnapshotT:
        if self._snapshot is None:
            return (0, {})
        return self._snapshot.take()
