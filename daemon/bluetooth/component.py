"""The bluetooth component: pairing, the phone registry and connection management.

Exports ``org.dashbridge.Phones1`` and writes the :class:`~daemon.phones.PhoneDirectory`
(``ctx.services["phones"]``) that the profile components read.
"""

from __future__ import annotations

from dbus_fast.service import ServiceInterface

from ..api.phones import Phones1
from ..context import AppContext
from .manager import BluetoothManager


class BluetoothComponent:
    name = "bluetooth"

    def __init__(self, ctx: AppContext) -> None:
        self.manager = BluetoothManager(ctx)
        self.api = Phones1(self.manager)

    def interfaces(self) -> list[ServiceInterface]:
        return [self.api]

    async def run(self) -> None:
        await self.manager.run()
