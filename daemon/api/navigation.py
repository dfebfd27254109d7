"""``org.dashbridge.Navigation1``: destinations offered to the driver and the delivery queue.

Thin: validate, delegate to the navigation relay (port :class:`~daemon.api.ports.NavigationPort`), map errors.
"""

# No ``from __future__ import annotations`` here: dbus-fast reads these annotations at class
# creation, and a postponed ``-> None`` would be taken for a D-Bus signature.

from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast import Variant
from dbus_fast.annotations import DBusBool, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from ..dbus import names
from ..errors import InvalidInput
from .base import api_call_sync

if TYPE_CHECKING:
    from .ports import IntentView, NavigationPort

VarDict = Annotated[dict[str, Any], DBusSignature("a{sv}")]
VarDictList = Annotated[list[dict[str, Any]], DBusSignature("aa{sv}")]

MAX_ID = 64


def _check_id(intent_id: str) -> str:
    if not intent_id or len(intent_id) > MAX_ID or not intent_id.isalnum():
        raise InvalidInput("intent id must be the id from IntentOffered/Pending")
    return intent_id


class Navigation1(ServiceInterface):
    def __init__(self, relay: "NavigationPort") -> None:
        super().__init__(names.DASHBRIDGE_NAVIGATION_IFACE)
        self._relay = relay
        relay.offered_listeners.append(self._offered)
        relay.changed_listeners.append(self._changed)
        relay.service_listeners.append(self._service)

    # -- listeners -> signals ----------------------------------------------------------------------
    def _offered(self, intent: "IntentView") -> None:
        self.IntentOffered(intent.to_dbus())
        self.emit_properties_changed({"PendingCount": self._relay.pending_count()})

    def _changed(self, intent: "IntentView", reason: str) -> None:
        self.IntentChanged(intent.id, intent.state, reason)
        self.emit_properties_changed({"PendingCount": self._relay.pending_count()})

    def _service(self, available: bool) -> None:
        self.emit_properties_changed({"ServiceAvailable": available})

    def snapshot_extra(self) -> dict[str, Any]:
        """For ``Daemon1.GetSnapshot``: ``Pending`` (as Pending() gives it)."""
        return {"Pending": Variant("aa{sv}", [i.to_dbus() for i in self._relay.pending()])}

    # -- methods -----------------------------------------------------------------------------------
    @dbus_method()
    @api_call_sync
    def Pending(self) -> VarDictList:
        return [i.to_dbus() for i in self._relay.pending()]

    @dbus_method()
    @api_call_sync
    def GetIntent(self, intent_id: DBusStr) -> VarDict:
        return self._relay.get(_check_id(intent_id)).to_dbus()

    @dbus_method()
    @api_call_sync
    def Accept(self, intent_id: DBusStr) -> DBusStr:
        return self._relay.accept(_check_id(intent_id)).state

    @dbus_method()
    @api_call_sync
    def Dismiss(self, intent_id: DBusStr) -> None:
        self._relay.dismiss(_check_id(intent_id))

    # -- signals -----------------------------------------------------------------------------------
    @dbus_signal()
    def IntentOffered(self, intent: VarDict) -> VarDict:
        return intent

    @dbus_signal()
    def IntentChanged(self, intent_id: DBusStr, state: DBusStr, reason: DBusStr
                      ) -> Annotated[tuple[str, str, str], DBusSignature("sss")]:
        return intent_id, state, reason

    # -- properties --------------------------------------------------------------------------------
    @dbus_property(access=PropertyAccess.READ)
    def ServiceAvailable(self) -> DBusBool:
        return self._relay.service_owner is not None

    @dbus_property(access=PropertyAccess.READ)
    def PendingCount(self) -> DBusUInt32:
        return self._relay.pending_count()
