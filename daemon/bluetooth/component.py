"""The bluetooth component: pairing, the phone registry and connection management.

Writes the :class:`~daemon.phones.PhoneDirectory` (``ctx.services.phones``) that the profile
components read; the composition root exports ``org.dashbridge.Phones1`` over :attr:`manager`.
"""

from __future__ import annotations

from ..context import AppContext
from .manager import BluetoothManager


class BluetoothComponent:
    name = "bluetooth"

    def __init__(self, ctx: AppContext) -> None:
        self.manager = BluetoothManager(ctx)

    async def run(self) -> None:
        await self.manager.run()
