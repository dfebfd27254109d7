"""The fake bluetoothd, put together from its parts (one concern each)."""

from collections.abc import Iterable
from typing import Any

from dbus_fast.aio import MessageBus

from ..phone import VirtualPhone
from .adapter import AdapterPart
from .agents import AgentsPart
from .control import BluezControl
from .devices import DevicesPart
from .gatt import GattPart
from .model import CONTROL_NAME, CONTROL_PATH
from .profiles import ProfilesPart


class FakeBluez(AdapterPart, DevicesPart, AgentsPart, ProfilesPart, GattPart):
    """A bluetoothd on a private bus.  ``await FakeBluez.start(address, phones)``."""

    @classmethod
    async def start(cls, bus_address: str, phones: Iterable[VirtualPhone] = (), **kw: Any) -> "FakeBluez":
        fake = cls(bus_address, **kw)
        for p in phones:
            fake.add_phone(p, paired=p.bonded, trusted=p.bonded)
        await fake._come_up()
        if fake._control_wanted:
            fake._control_bus = await MessageBus(bus_address=bus_address).connect()
            fake._control_bus.export(CONTROL_PATH, BluezControl(fake))
            await fake._control_bus.request_name(CONTROL_NAME)
        return fake

