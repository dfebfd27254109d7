"""``org.dashbridge.Sim.Bluez1`` at ``/org/dashbridge/sim``, owned as ``org.dashbridge.Sim.Bluez`` on a
separate connection that survives simulated restarts: drive the simulated world from ``busctl`` or a
scenario (for developers; not part of org.bluez)."""

from typing import Annotated, Any

from dbus_fast import DBusError, Variant
from dbus_fast.annotations import DBusBool, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method

from .. import names
from ..phone import VirtualPhone
from .core import BluezCore
from .model import CONTROL_IFACE

PhoneList = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]


class BluezControl(ServiceInterface):
    """``org.dashbridge.Sim.Bluez1``: drive the simulated world from ``busctl`` or a scenario."""

    def __init__(self, fake: BluezCore) -> None:
        super().__init__(CONTROL_IFACE)
        self.fake = fake

    @dbus_method()
    def AddPhone(self, address: DBusStr, name: DBusStr, device_class: DBusUInt32,
                 profiles: Annotated[list[str], DBusSignature("as")], pairing: DBusStr,
                 paired: DBusBool) -> DBusStr:
        if pairing not in ("numeric", "legacy_pin", "just_works"):
            raise _ctl_error("pairing must be numeric, legacy_pin or just_works")
        kw: dict[str, Any] = {"address": address, "name": name, "pairing": pairing}
        if device_class:
            kw["device_class"] = device_class
        if profiles:
            kw["profiles"] = tuple(profiles)
        try:
            return self.fake.add_phone(VirtualPhone(**kw), paired=paired)
        except ValueError as exc:
            raise _ctl_error(str(exc)) from None

    @dbus_method()
    def RemovePhone(self, address: DBusStr) -> None:
        self._known(address)
        self.fake.remove_phone(address)

    @dbus_method()
    async def SetInRange(self, address: DBusStr, in_range: DBusBool) -> None:
        self._known(address)
        await self.fake.set_in_range(address, in_range)

    @dbus_method()
    async def PhonePair(self, address: DBusStr, passkey: DBusUInt32) -> DBusStr:
        """The phone starts pairing (passkey 0: the fake picks one); returns the outcome."""
        self._known(address)
        return await self.fake.phone_pair(address, passkey=passkey or None)

    @dbus_method()
    def SetAcceptsPairing(self, address: DBusStr, accept: DBusBool) -> None:
        self._known(address)
        self.fake.set_phone_accepts_pairing(address, accept)

    @dbus_method()
    def ForgetBond(self, address: DBusStr) -> None:
        self._known(address)
        self.fake.phone_forget_bond(address)

    @dbus_method()
    async def PhoneConnect(self, address: DBusStr) -> DBusBool:
        self._known(address)
        return await self.fake.phone_connect(address)

    @dbus_method()
    async def PhoneDisconnect(self, address: DBusStr) -> None:
        self._known(address)
        await self.fake.phone_disconnect(address)

    @dbus_method()
    async def SetPowered(self, on: DBusBool) -> None:
        await self.fake.set_powered(on)

    @dbus_method()
    async def Restart(self, clean: DBusBool) -> None:
        """Simulated bluetoothd restart (clean: agents get Release first)."""
        await self.fake.restart(clean=clean)

    @dbus_method()
    def ListPhones(self) -> PhoneList:
        out: list[dict[str, Variant]] = []
        for addr, dev in sorted(self.fake._devices.items()):
            st = self.fake.device_props(addr) or {}
            out.append({
                "Address": Variant("s", addr), "Name": Variant("s", dev.phone.name),
                "InRange": Variant("b", dev.phone.in_range), "PhoneBonded": Variant("b", dev.phone.bonded),
                "Paired": Variant("b", dev.paired), "Connected": Variant("b", bool(st.get("Connected"))),
                "Trusted": Variant("b", bool(st.get("Trusted"))),
            })
        return out

    def _known(self, address: str) -> None:
        if address.upper() not in self.fake._devices:
            raise _ctl_error(f"no phone {address}")


def _ctl_error(text: str) -> Exception:
    return DBusError(names.SIM_ERR + "InvalidArguments", text)
