"""``Adapter1``: discovery sessions, inquiry, adapter properties and timers, power."""

import asyncio
from collections.abc import Awaitable
from typing import Any

from dbus_fast import Message

from .core import BluezCore, BluezIface
from .model import (
    BluezError,
)


class AdapterPart(BluezCore):
    # ================================================================================================
    # Adapter1
    # ================================================================================================
    def _m_Adapter1_StartDiscovery(self, msg: Message, obj: BluezIface) -> Message:
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "Resource Not Ready")
        sender = msg.sender or ""
        if sender in self._discovery:
            raise BluezError("InProgress", "Operation already in progress")
        self._discovery.add(sender)
        if len(self._discovery) == 1:
            self._set_adapter(Discovering=True)
            self._inquiry = self._spawn(self._inquire())
        return Message.new_method_return(msg)

    def _m_Adapter1_StopDiscovery(self, msg: Message, obj: BluezIface) -> Message:
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "Resource Not Ready")
        sender = msg.sender or ""
        if sender not in self._discovery:
            raise BluezError("Failed", "No discovery started")
        self._discovery.discard(sender)
        self._discovery_filters.pop(sender, None)
        if not self._discovery:
            self._stop_discovering()
        return Message.new_method_return(msg)

    def _m_Adapter1_SetDiscoveryFilter(self, msg: Message, obj: BluezIface) -> Message:
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "Resource Not Ready")
        (flt,) = msg.body
        want = {"UUIDs": "as", "RSSI": "n", "Pathloss": "q", "Transport": "s", "DuplicateData": "b",
                "Discoverable": "b", "Pattern": "s", "AutoConnect": "b"}
        for k, v in flt.items():
            if k not in want or v.signature != want[k]:
                raise BluezError("InvalidArguments", "Invalid arguments in method call")
        if "Transport" in flt and flt["Transport"].value not in ("auto", "bredr", "le"):
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        sender = msg.sender or ""
        if flt:
            self._discovery_filters[sender] = {k: v.value for k, v in flt.items()}
        else:
            self._discovery_filters.pop(sender, None)
        return Message.new_method_return(msg)

    def _m_Adapter1_GetDiscoveryFilters(self, msg: Message, obj: BluezIface) -> Message:
        return Message.new_method_return(msg, "as", [["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData",
                                                      "Discoverable", "Pattern", "AutoConnect"]])

    def _m_Adapter1_RemoveDevice(self, msg: Message, obj: BluezIface) -> Message | Awaitable[Any]:
        (path,) = msg.body
        dev = self._dev_by_path(path)
        if dev is None or not self._exported(dev):
            raise BluezError("DoesNotExist", "Does Not Exist")

        async def remove() -> None:
            assert dev is not None
            if dev.op is not None:
                dev.abort = "removed"
                dev.op.cancel()
            if self._device_state(dev).get("Connected"):
                await self._drop_link(dev, "Local", "Connection terminated by local host")
            dev.paired = False
            dev.services_known = False
            self._unexport_device(dev)
            dev.state = {}
            self._bump()

        return remove()

    async def _inquire(self) -> None:
        await asyncio.sleep(self.t.inquiry_delay)
        for dev in list(self._devices.values()):
            advertises = getattr(dev.phone, "companion", None) is not None  # LE advertising (gatt.py)
            if dev.phone.in_range and (dev.phone.discoverable or advertises) and self._adapter_state["Discovering"]:
                self._seen(dev)

    def _stop_discovering(self) -> None:
        if self._inquiry:
            self._inquiry.cancel()
            self._inquiry = None
        self._set_adapter(Discovering=False)
        for dev in self._devices.values():
            if self._exported(dev) and self._device_state(dev).get("RSSI") is not None:
                self._set(dev, RSSI=None)  # goes to `invalidated`
                self._arm_temporary(dev)

    def _set_adapter_prop(self, name: str, value: Any) -> Awaitable[Any] | None:
        if name == "Powered":
            async def power() -> None:
                await self._set_powered(bool(value))
            return power()
        if name == "Alias":
            self._set_adapter(Alias=value or self._adapter_state["Name"])
        elif name == "Discoverable":
            if not self._adapter_state["Powered"]:
                # src/adapter.c property_set_discoverable (5.66..current)
                raise BluezError("Failed", "Not Powered")
            self._set_adapter(Discoverable=bool(value))
            self._arm_timer("Discoverable", "DiscoverableTimeout")
        elif name == "DiscoverableTimeout":
            self._set_adapter(DiscoverableTimeout=int(value))
            self._arm_timer("Discoverable", "DiscoverableTimeout")
        elif name == "Pairable":
            self._set_adapter(Pairable=bool(value))
            self._arm_timer("Pairable", "PairableTimeout")
        elif name == "PairableTimeout":
            self._set_adapter(PairableTimeout=int(value))
            self._arm_timer("Pairable", "PairableTimeout")
        elif name == "Connectable":
            self._connectable_state = bool(value)
            if not value:
                self._set_adapter(Connectable=False, Discoverable=False)
            else:
                self._set_adapter(Connectable=True)
        return None

    def _arm_timer(self, prop: str, timeout_prop: str) -> None:
        attr = "_discoverable_timer" if prop == "Discoverable" else "_pairable_timer"
        old: asyncio.TimerHandle | None = getattr(self, attr)
        if old:
            old.cancel()
        setattr(self, attr, None)
        secs = int(self._adapter_state[timeout_prop])
        if self._adapter_state[prop] and secs > 0:
            setattr(self, attr, asyncio.get_running_loop().call_later(
                secs, lambda: self._set_adapter(**{prop: False})))

    async def _set_powered(self, on: bool) -> None:
        if on == self._adapter_state["Powered"]:
            return
        if not on:
            self._set_adapter(PowerState="on-disabling")
            for dev in list(self._devices.values()):
                if dev.op is not None:
                    dev.abort = "canceled"
                    dev.op.cancel()
            drops = [self._drop_link(d, "Local", "Connection terminated by local host")
                     for d in self._devices.values() if self._exported(d) and self._device_state(d).get("Connected")]
            if drops:
                await asyncio.gather(*drops)
            if self._discovery:
                self._discovery.clear()
                self._stop_discovering()
            self._set_adapter(Powered=False, PowerState="off", Discoverable=False, Discovering=False)
        else:
            self._set_adapter(Powered=True, PowerState="on")
            for dev in self._devices.values():
                if dev.phone.auto_reconnect and dev.phone.in_range and dev.paired and dev.phone.bonded:
                    self._spawn(self._remote_connect(dev))

