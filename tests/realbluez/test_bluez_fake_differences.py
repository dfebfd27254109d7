"""Pinning tests: where the fake bluetoothd (``simulator/bluez``) was corrected after running the
real one, the same observation is made against both.

* ``Pairable`` follows the default agent (bluetoothd 5.66, ``AlwaysPairable=false``, main.conf's
  default): registering the first agent makes the controller bondable (Set Bondable 1 precedes
  Set IO Capability), the default agent's owner leaving the bus makes it not bondable.  The fake
  kept ``Pairable`` true whatever the agents did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call
from dashbridge.simulator.bluez import BluezTimings, FakeBluez
from dashbridge.simulator.bus import PrivateBus
from tests.bus.pairing_helpers import wait_ready

from . import mgmtserver as mg
from .conftest import Rig
from .support import adapter_props, poll


async def pairable_follows_the_agent(bus_address: str, client: MessageBus,
                                     restart_agent_owner: Callable[[], Awaitable[None]]) -> None:
    """Common observation: an agent registered and made default -> Pairable true; its connection
    goes -> false; ``restart_agent_owner`` brings the agent back -> true again."""
    agent_bus = await MessageBus(bus_address=bus_address).connect()
    try:
        await call(agent_bus, "org.bluez", "/org/bluez", "org.bluez.AgentManager1", "RegisterAgent", "os",
                   ["/test/agent", "DisplayYesNo"], timeout=5)
        await call(agent_bus, "org.bluez", "/org/bluez", "org.bluez.AgentManager1", "RequestDefaultAgent", "o",
                   ["/test/agent"], timeout=5)
        await poll(lambda: _pairable(client, True), 5, "Pairable true with a default agent")
    finally:
        agent_bus.disconnect()
    await poll(lambda: _pairable(client, False), 5, "Pairable false once the default agent's owner left")
    await restart_agent_owner()
    await poll(lambda: _pairable(client, True), 5, "Pairable true again with the agent back")


async def _pairable(client: MessageBus, value: bool) -> bool:
    return (await adapter_props(client)).get("Pairable") is value


async def test_real_bluetoothd_pairable_follows_the_default_agent(rig: Rig) -> None:
    await wait_ready(rig.client, rig.signals, 10)
    rig.daemon.stop()  # its agent goes: the controller stops being bondable
    await poll(lambda: not rig.mgmt.ctl.setting(mg.S_BONDABLE), 5, "Set Bondable 0 with no agent")

    async def daemon_back() -> None:
        rig.daemon.start(wait_ready=False)
        await rig.daemon.await_ready()

    await pairable_follows_the_agent(rig.bluetoothd.bus_address, rig.client, daemon_back)
    assert rig.mgmt.ctl.setting(mg.S_BONDABLE)


async def test_fake_bluetoothd_pairable_follows_the_default_agent(system_bus: PrivateBus, client: MessageBus) -> None:
    fake = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast(), version="5.66")
    agent_bus: list[MessageBus] = []

    async def agent_back() -> None:
        bus = await MessageBus(bus_address=system_bus.address).connect()
        agent_bus.append(bus)
        await call(bus, "org.bluez", "/org/bluez", "org.bluez.AgentManager1", "RegisterAgent", "os",
                   ["/test/agent2", "KeyboardDisplay"], timeout=5)

    try:
        await pairable_follows_the_agent(system_bus.address, client, agent_back)
    finally:
        for b in agent_bus:
            b.disconnect()
        await fake.stop()
