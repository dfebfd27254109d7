"""``org.dashbridge.Calls1`` at ``/org/dashbridge``: calls on the connected phones (HFP via oFono).

Thin: validate, delegate to the calls component (port :class:`~daemon.api.ports.CallsPort`), map errors.
Documented in ``daemon/api/xml/org.dashbridge.Calls1.xml`` and ``docs/api/Calls1.md``.

Signals are sent straight as messages (their shape is declared with ``@dbus_signal`` for
introspection): the incoming-call signal is on the hot path measured by ``bench/bench_calls.py``.
"""

# No "from __future__ import annotations": dbus-fast reads these annotations at run time, and a
# postponed "None" return annotation is not understood by it.
import re
from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast import Message, Variant
from dbus_fast.annotations import DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method, dbus_signal

from dashbridge.profiles.limits import MAX_NAME, MAX_NUMBER, clip

from ..dbus import names
from ..errors import InvalidInput
from .base import api_call

if TYPE_CHECKING:
    from dashbridge.profiles.hfp.models import Call, PhoneStatus

    from .ports import CallsPort

Props = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
PropsList = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
CallSignal = Annotated[tuple[str, dict[str, Variant]], DBusSignature("sa{sv}")]
RemovedSignal = Annotated[tuple[str, str], DBusSignature("ss")]

_ADDRESS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_MAX_ARG = 256


def _phone_arg(phone: str) -> str:
    if phone and not _ADDRESS.fullmatch(phone):
        raise InvalidInput("phone must be a Bluetooth address like AA:BB:CC:DD:EE:FF, or empty for the primary phone")
    return phone.upper()


def _call_arg(call_id: str) -> str:
    if not call_id or len(call_id) > 64:
        raise InvalidInput("call must be a call id from GetCalls or a Call* signal")
    return call_id


class Calls1(ServiceInterface):
    def __init__(self, handler: "CallsPort") -> None:
        super().__init__(names.DASHBRIDGE_CALLS_IFACE)
        self._h = handler
        handler.add_call_listener(self._on_call)
        handler.add_phone_listener(self._on_phone)

    # ------------------------------------------------------------------ shapes

    def call_props(self, c: "Call") -> dict[str, Variant]:
        name, source = self._h.caller_name(c)
        phone_name = self._h.phone_name(c.phone)
        return {
            "Id": Variant("s", c.id),
            "Phone": Variant("s", c.phone),
            "PhoneName": Variant("s", clip(phone_name, MAX_NAME)),
            "Number": Variant("s", clip(c.number, MAX_NUMBER)),
            "Name": Variant("s", clip(name, MAX_NAME)),
            "NameSource": Variant("s", source),
            "State": Variant("s", c.state),
            "Direction": Variant("s", c.direction),
            "StartTime": Variant("x", int(c.start_time or 0)),
            "Multiparty": Variant("b", c.multiparty),
            "Emergency": Variant("b", c.emergency),
            "DisconnectReason": Variant("s", c.disconnect_reason),
        }

    def phone_props(self, st: "PhoneStatus", connected: bool = True) -> dict[str, Variant]:
        return {
            "Address": Variant("s", st.address),
            "Name": Variant("s", clip(st.name, MAX_NAME)),
            "Role": Variant("s", self._h.phone_role(st.address)),
            "Connected": Variant("b", connected),
            "Ready": Variant("b", st.ready and connected),
            "Operator": Variant("s", st.operator),
            "Registration": Variant("s", st.registration),
            "Signal": Variant("i", st.signal),
            "Battery": Variant("i", st.battery),
            "InbandRinging": Variant("b", st.inband_ringing),
        }

    def snapshot_extra(self) -> dict[str, Variant]:
        """For ``Daemon1.GetSnapshot``: ``Calls`` (GetCalls) and ``Phones`` (GetPhones)."""
        return {"Calls": Variant("aa{sv}", [self.call_props(c) for c in self._h.calls()]),
                "Phones": Variant("aa{sv}", [self.phone_props(st) for st in self._h.phones()])}

    # ------------------------------------------------------------------ events -> signals

    def _send(self, member: str, signature: str, body: list[Any]) -> None:
        msg = Message.new_signal(names.DASHBRIDGE_PATH, names.DASHBRIDGE_CALLS_IFACE, member, signature, body)
        for bus in ServiceInterface._get_buses(self):
            bus.send(msg)

    def _on_call(self, kind: str, call: "Call", reason: str) -> None:
        if kind == "added":
            self._send("CallAdded", "sa{sv}", [call.id, self.call_props(call)])
        elif kind == "changed":
            self._send("CallChanged", "sa{sv}", [call.id, self.call_props(call)])
        else:
            self._send("CallRemoved", "ss", [call.id, reason])

    def _on_phone(self, status: "PhoneStatus", connected: bool) -> None:
        self._send("PhoneChanged", "sa{sv}", [status.address, self.phone_props(status, connected)])

    # Declared for introspection (and the XML check); emitted by _send above.
    @dbus_signal()
    def CallAdded(self) -> CallSignal:  # pragma: no cover - shape only
        raise NotImplementedError

    @dbus_signal()
    def CallChanged(self) -> CallSignal:  # pragma: no cover - shape only
        raise NotImplementedError

    @dbus_signal()
    def CallRemoved(self) -> RemovedSignal:  # pragma: no cover - shape only
        raise NotImplementedError

    @dbus_signal()
    def PhoneChanged(self) -> CallSignal:  # pragma: no cover - shape only
        raise NotImplementedError

    # ------------------------------------------------------------------ methods

    @dbus_method()
    @api_call
    async def Dial(self, number: DBusStr, phone: DBusStr) -> DBusStr:
        if len(number) > _MAX_ARG:
            raise InvalidInput("the number is too long")
        call = await self._h.dial(number, _phone_arg(phone))
        return call.id

    @dbus_method()
    @api_call
    async def Answer(self, call: DBusStr) -> None:
        await self._h.answer(_call_arg(call))

    @dbus_method()
    @api_call
    async def Hangup(self, call: DBusStr) -> None:
        await self._h.hangup(_call_arg(call))

    @dbus_method()
    @api_call
    async def HangupAll(self, phone: DBusStr) -> DBusUInt32:
        return await self._h.hangup_all(_phone_arg(phone))

    @dbus_method()
    @api_call
    async def Hold(self, call: DBusStr) -> None:
        await self._h.hold(_call_arg(call))

    @dbus_method()
    @api_call
    async def Resume(self, call: DBusStr) -> None:
        await self._h.resume(_call_arg(call))

    @dbus_method()
    @api_call
    async def Swap(self, phone: DBusStr) -> None:
        await self._h.swap(_phone_arg(phone))

    @dbus_method()
    @api_call
    async def SendTones(self, call: DBusStr, tones: DBusStr) -> None:
        if len(tones) > _MAX_ARG:
            raise InvalidInput("too many tones")
        await self._h.send_tones(_call_arg(call), tones)

    @dbus_method()
    @api_call
    async def GetCalls(self) -> PropsList:
        return [self.call_props(c) for c in self._h.calls()]

    @dbus_method()
    @api_call
    async def GetPhones(self) -> PropsList:
        return [self.phone_props(st) for st in self._h.phones()]
