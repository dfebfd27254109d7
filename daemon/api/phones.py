"""``org.dashbridge.Phones1`` at ``/org/dashbridge``: pairing window and prompts, paired phones,
connect / disconnect / forget, priority.

Thin: validate, delegate to the bluetooth component's manager (port :class:`~daemon.api.ports.PhonesPort`),
map errors.
Documented in ``daemon/api/xml/org.dashbridge.Phones1.xml`` and ``docs/api/Phones1.md``.
"""

# No "from __future__ import annotations": dbus-fast reads these annotations at run time.
import asyncio
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, assert_never

from dbus_fast import Variant
from dbus_fast.annotations import DBusBool, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from .. import events as ev
from ..dbus import names
from ..errors import InvalidInput
from .base import api_call, api_call_sync

if TYPE_CHECKING:
    from .ports import PhonesPort, PromptView

PropsList = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
PromptList = Annotated[list[tuple[int, str, str, str, str, int]], DBusSignature("a(ussssu)")]
PromptSignal = Annotated[tuple[int, str, str, str, str, int], DBusSignature("ussssu")]
CancelSignal = Annotated[tuple[int, str], DBusSignature("us")]
FinishedSignal = Annotated[tuple[str, bool, str], DBusSignature("sbs")]
ConnectedSignal = Annotated[tuple[str, str, str], DBusSignature("sss")]
AddressReason = Annotated[tuple[str, str], DBusSignature("ss")]
ChangedSignal = Annotated[tuple[str, dict[str, Variant]], DBusSignature("sa{sv}")]
FoundSignal = Annotated[tuple[str, str, int], DBusSignature("ssn")]

_MAX_VALUE = 64

_VARIANT_SIG = {"Name": "s", "Priority": "u", "State": "s", "Role": "s", "Profiles": "as", "LastConnected": "t",
                "PairedAt": "t", "NeedsRepair": "b", "Reason": "s", "Address": "s", "RSSI": "n", "Visible": "b"}


def _variants(d: Mapping[str, Any]) -> dict[str, Variant]:
    return {k: Variant(_VARIANT_SIG[k], v) for k, v in d.items() if k in _VARIANT_SIG}


def _short(value: str, what: str) -> str:
    if len(value) > _MAX_VALUE:
        raise InvalidInput(f"{what} is too long")
    return value


class Phones1(ServiceInterface):
    def __init__(self, manager: "PhonesPort") -> None:
        super().__init__(names.DASHBRIDGE_PHONES_IFACE)
        self._m = manager
        manager.add_listener(self._on_event)
        manager.prompts.events.requested.append(self._on_prompt)
        manager.prompts.events.cancelled.append(self._on_prompt_cancelled)

    # ------------------------------------------------------------------ events -> signals
    def _on_prompt(self, p: "PromptView") -> None:
        self.PromptRequested(p.id, p.kind, p.address, p.name, p.code, math.ceil(p.timeout))

    def _on_prompt_cancelled(self, p: "PromptView", reason: str) -> None:
        self.PromptCancelled(p.id, reason)

    def _on_event(self, event: ev.BluetoothEvent) -> None:
        match event:
            case ev.PairingFinished(address, success, reason):
                self.PairingFinished(address, success, reason)
            case ev.PhoneConnected(address, name, role):
                self.PhoneConnected(address, name, role)
            case ev.PhoneDisconnected(address, reason):
                self.PhoneDisconnected(address, reason)
            case ev.PhoneChanged(address, changes):
                self.PhoneChanged(address, _variants(changes))
            case ev.PhoneForgotten(address):
                self.PhoneForgotten(address)
            case ev.RepairNeeded(address, name):
                self.RepairNeeded(address, name)
            case ev.DeviceFound(address, name, rssi):
                self.DeviceFound(address, name, rssi)
            case ev.PairingWindowChanged(is_open):
                self.emit_properties_changed({"PairingWindow": is_open})
            case ev.BluetoothStateChanged(state):
                self.emit_properties_changed({"State": state})
            case _:
                assert_never(event)

    # ------------------------------------------------------------------ Daemon1.GetSnapshot
    def snapshot_extra(self) -> dict[str, Variant]:
        """Besides the properties: ``Phones`` (ListPhones), ``Prompts`` (ListPrompts), ``Nearby``."""
        return {"Phones": Variant("aa{sv}", [_variants(p) for p in self._m.phones()]),
                "Prompts": Variant("a(ussssu)", [list(p) for p in self._prompts()]),
                "Nearby": Variant("aa{sv}", [_variants(p) for p in self._m.nearby()])}

    def _prompts(self) -> list[tuple[int, str, str, str, str, int]]:
        now = asyncio.get_running_loop().time()
        return [(p.id, p.kind, p.address, p.name, p.code, p.seconds_left(now)) for p in self._m.prompts.open]

    # ------------------------------------------------------------------ properties
    @dbus_property(access=PropertyAccess.READ)
    def PairingWindow(self) -> DBusBool:
        return self._m.window_open

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusStr:
        return self._m.state

    # ------------------------------------------------------------------ methods
    @dbus_method()
    @api_call
    async def OpenPairingWindow(self, seconds: DBusUInt32) -> DBusUInt32:
        return await self._m.open_window(seconds)

    @dbus_method()
    @api_call
    async def ClosePairingWindow(self) -> None:
        await self._m.close_window("closed by the dashboard")

    @dbus_method()
    @api_call_sync
    def AnswerPrompt(self, prompt: DBusUInt32, accept: DBusBool, value: DBusStr) -> None:
        self._m.answer(prompt, accept, _short(value, "value"))

    @dbus_method()
    @api_call_sync
    def ListPrompts(self) -> PromptList:
        return self._prompts()

    @dbus_method()
    @api_call_sync
    def ListPhones(self) -> PropsList:
        return [_variants(p) for p in self._m.phones()]

    @dbus_method()
    @api_call_sync
    def ListNearby(self) -> PropsList:
        return [_variants(p) for p in self._m.nearby()]

    @dbus_method()
    @api_call
    async def Pair(self, address: DBusStr) -> None:
        await self._m.pair(_short(address, "address"))

    @dbus_method()
    @api_call
    async def Connect(self, address: DBusStr) -> None:
        await self._m.connect(_short(address, "address"))

    @dbus_method()
    @api_call
    async def Disconnect(self, address: DBusStr) -> None:
        await self._m.disconnect(_short(address, "address"))

    @dbus_method()
    @api_call
    async def Forget(self, address: DBusStr) -> None:
        await self._m.forget(_short(address, "address"))

    @dbus_method()
    @api_call_sync
    def SetPriority(self, address: DBusStr, position: DBusUInt32) -> None:
        self._m.set_priority(_short(address, "address"), position)

    # ------------------------------------------------------------------ signals
    @dbus_signal()
    def PromptRequested(self, prompt: int, kind: str, address: str, name: str, code: str,
                        timeout: int) -> PromptSignal:
        return (prompt, kind, address, name, code, timeout)

    @dbus_signal()
    def PromptCancelled(self, prompt: int, reason: str) -> CancelSignal:
        return (prompt, reason)

    @dbus_signal()
    def PairingFinished(self, address: str, success: bool, reason: str) -> FinishedSignal:
        return (address, success, reason)

    @dbus_signal()
    def PhoneConnected(self, address: str, name: str, role: str) -> ConnectedSignal:
        return (address, name, role)

    @dbus_signal()
    def PhoneDisconnected(self, address: str, reason: str) -> AddressReason:
        return (address, reason)

    @dbus_signal()
    def PhoneChanged(self, address: str, changes: dict[str, Variant]) -> ChangedSignal:
        return (address, changes)

    @dbus_signal()
    def PhoneForgotten(self, address: str) -> DBusStr:
        return address

    @dbus_signal()
    def RepairNeeded(self, address: str, name: str) -> AddressReason:
        return (address, name)

    @dbus_signal()
    def DeviceFound(self, address: str, name: str, rssi: int) -> FoundSignal:
        return (address, name, rssi)
