"""The fake bluetoothd's object tree and agent rules behave like src/agent.c (reference §1.2-1.3, §7)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.errors import AlreadyExists, DoesNotExist, InvalidArguments
from dashbridge.simulator.bluez import BluezTimings, FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.phone import VirtualPhone

from .bluez_helpers import (
    ADAPTER,
    ADAPTER_PATH,
    AGENT_MANAGER,
    RecordingAgent,
    SignalLog,
    bluez_call,
    dev_path,
    set_prop,
)
from .bluez_versions import bluez_version  # noqa: F401  (every test: BlueZ 5.66 and current)

PHONE = "AA:BB:CC:00:00:01"


@pytest.fixture
async def fake(system_bus: PrivateBus) -> AsyncIterator[FakeBluez]:
    f = await FakeBluez.start(system_bus.address, [VirtualPhone(PHONE, name="Ada's phone")],
                              timings=BluezTimings.fast(agent_timeout=0.3))
    yield f
    await f.stop()


async def _agent_client(system_bus: PrivateBus, path: str = "/test/agent",
                        capability: str = "DisplayYesNo") -> tuple[MessageBus, RecordingAgent]:
    bus = await MessageBus(bus_address=system_bus.address).connect()
    agent = RecordingAgent()
    bus.export(path, agent)
    await bluez_call(bus, "/org/bluez", AGENT_MANAGER, "RegisterAgent", "os", [path, capability])
    return bus, agent


async def test_object_tree_matches_bluetoothd(fake: FakeBluez, client: MessageBus) -> None:
    (objs,) = await bluez_call(client, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    assert set(objs["/org/bluez"]) == {AGENT_MANAGER, "org.bluez.ProfileManager1"}
    adapter = {k: v.value for k, v in objs[ADAPTER_PATH][ADAPTER].items()}
    assert "central" in adapter["Roles"]
    for key in ("Address", "Alias", "Powered", "Pairable", "PairableTimeout", "Discoverable",
                "DiscoverableTimeout", "Discovering", "UUIDs", "Class"):
        assert key in adapter
    assert objs[ADAPTER_PATH][ADAPTER]["Class"].signature == "u"
    # An unpaired, undiscovered phone has no object yet.
    assert dev_path(PHONE) not in objs


async def test_one_agent_per_connection_whatever_the_path(fake: FakeBluez, system_bus: PrivateBus) -> None:
    bus, _agent = await _agent_client(system_bus)
    try:
        with pytest.raises(AlreadyExists):
            await bluez_call(bus, "/org/bluez", AGENT_MANAGER, "RegisterAgent", "os", ["/other/path", "DisplayYesNo"])
        with pytest.raises(DoesNotExist):
            await bluez_call(bus, "/org/bluez", AGENT_MANAGER, "RequestDefaultAgent", "o", ["/other/path"])
        with pytest.raises(DoesNotExist):
            await bluez_call(bus, "/org/bluez", AGENT_MANAGER, "UnregisterAgent", "o", ["/other/path"])
        await bluez_call(bus, "/org/bluez", AGENT_MANAGER, "UnregisterAgent", "o", ["/test/agent"])
        assert fake.agents == []
    finally:
        bus.disconnect()


async def test_capability_prefix_match_and_bad_capability(fake: FakeBluez, system_bus: PrivateBus) -> None:
    bus = await MessageBus(bus_address=system_bus.address).connect()
    try:
        with pytest.raises(InvalidArguments):
            await bluez_call(bus, "/org/bluez", AGENT_MANAGER, "RegisterAgent", "os", ["/a", "displayyesno"])
        await bluez_call(bus, "/org/bluez", AGENT_MANAGER, "RegisterAgent", "os", ["/a", ""])
        assert fake.agents[0][2] == "KeyboardDisplay"
    finally:
        bus.disconnect()


async def test_default_agent_stack_promotes_next_when_default_leaves(fake: FakeBluez, system_bus: PrivateBus) -> None:
    first, _ = await _agent_client(system_bus, "/first")
    second, _ = await _agent_client(system_bus, "/second")
    try:
        assert fake.default_agent == (first.unique_name, "/first")  # the first one is default
        await bluez_call(second, "/org/bluez", AGENT_MANAGER, "RequestDefaultAgent", "o", ["/second"])
        assert fake.default_agent == (second.unique_name, "/second")
        second.disconnect()
        await fake.wait_until(lambda: fake.default_agent == (first.unique_name, "/first"))
    finally:
        first.disconnect()
        second.disconnect()


async def test_remote_pairing_asks_default_agent_and_orders_properties(fake: FakeBluez, system_bus: PrivateBus,
                                                                      client: MessageBus,
                                                                      bluez_version: str) -> None:  # noqa: F811
    log = await SignalLog.attach(client)
    bus, agent = await _agent_client(system_bus)
    try:
        await set_prop(client, ADAPTER_PATH, ADAPTER, "Discoverable", "b", True)
        outcome = await fake.phone_pair(PHONE, passkey=4242)
        assert outcome == "paired"
        assert agent.calls[0] == ("RequestConfirmation", (dev_path(PHONE), 4242))
        await log.wait(lambda m: m.member == "PropertiesChanged" and "Paired" in m.body[1])
        changes = log.props_changed(dev_path(PHONE))
        # Connected first, on its own (the agent is asked after it).
        assert changes[0][0] == {"Connected": True}
        paired_at = next(i for i, (c, _) in enumerate(changes) if "Paired" in c)
        if bluez_version == "5.66":
            # Bonded when the keys are stored; Paired/UUIDs/ServicesResolved after SDP.
            bonded_at = next(i for i, (c, _) in enumerate(changes) if "Bonded" in c)
            assert bonded_at < paired_at and "Paired" not in changes[bonded_at][0]
            assert {"Paired", "UUIDs", "ServicesResolved"} <= set(changes[paired_at][0])
        else:  # Paired/Bonded/UUIDs/ServicesResolved together after SDP.
            assert {"Paired", "Bonded", "UUIDs", "ServicesResolved"} <= set(changes[paired_at][0])
        added = log.of("InterfacesAdded")
        assert any(m.body[0] == dev_path(PHONE) for m in added)
    finally:
        bus.disconnect()


async def test_untrusted_device_gets_authorize_service_per_profile(fake: FakeBluez, system_bus: PrivateBus,
                                                                  client: MessageBus) -> None:
    bus, agent = await _agent_client(system_bus)
    try:
        await set_prop(client, ADAPTER_PATH, ADAPTER, "Discoverable", "b", True)
        assert await fake.phone_pair(PHONE) == "paired"
        await fake.wait_until(lambda: len([m for m in agent.members() if m == "AuthorizeService"]) >= 2)
        uuids = sorted(a[1] for m, a in agent.calls if m == "AuthorizeService")
        assert uuids == ["0000110b-0000-1000-8000-00805f9b34fb", "0000110e-0000-1000-8000-00805f9b34fb"]
        # Trusted: no prompts on the next connection.
        await fake.phone_disconnect(PHONE)
        fake.trust(PHONE)
        before = len(agent.calls)
        assert await fake.phone_connect(PHONE)
        assert len(agent.calls) == before
    finally:
        bus.disconnect()


async def test_agent_timeout_then_cancel_and_rejection(fake: FakeBluez, system_bus: PrivateBus,
                                                       client: MessageBus) -> None:
    bus, agent = await _agent_client(system_bus)
    agent.answer = "hang"
    try:
        await set_prop(client, ADAPTER_PATH, ADAPTER, "Discoverable", "b", True)
        assert await fake.phone_pair(PHONE) == "rejected"
        await agent.wait_for("Cancel")
        assert fake.agent_log[-1].outcome == "timeout"
        props = fake.device_props(PHONE)
        assert props is not None and not props["Paired"] and not props["Connected"]
    finally:
        bus.disconnect()


async def test_any_error_reply_is_a_rejection(fake: FakeBluez, system_bus: PrivateBus, client: MessageBus) -> None:
    bus, agent = await _agent_client(system_bus)
    agent.answer = "reject"
    try:
        await set_prop(client, ADAPTER_PATH, ADAPTER, "Discoverable", "b", True)
        assert await fake.phone_pair(PHONE) == "rejected"
        assert "Cancel" not in agent.members()
        assert not fake.phone(PHONE).bonded
    finally:
        bus.disconnect()


async def test_no_default_agent_means_rejected(fake: FakeBluez, client: MessageBus) -> None:
    await set_prop(client, ADAPTER_PATH, ADAPTER, "Discoverable", "b", True)
    assert await fake.phone_pair(PHONE) == "no_agent"


async def test_phone_cannot_find_a_car_that_is_not_discoverable(fake: FakeBluez, system_bus: PrivateBus) -> None:
    bus, agent = await _agent_client(system_bus)
    try:
        assert await fake.phone_pair(PHONE) == "not_found"
        assert agent.calls == []
    finally:
        bus.disconnect()


async def test_just_works_and_legacy_pin(system_bus: PrivateBus, client: MessageBus) -> None:
    jw = VirtualPhone("AA:BB:CC:00:00:02", pairing="just_works")
    legacy = VirtualPhone("AA:BB:CC:00:00:03", pairing="legacy_pin", pin="1234")
    fake = await FakeBluez.start(system_bus.address, [jw, legacy], timings=BluezTimings.fast())
    bus, agent = await _agent_client(system_bus)
    try:
        await set_prop(client, ADAPTER_PATH, ADAPTER, "Discoverable", "b", True)
        assert await fake.phone_pair(jw.address) == "paired"
        assert agent.calls[0] == ("RequestAuthorization", (dev_path(jw.address),))
        # The phone's profiles come in next (AuthorizeService, one request at a time per agent).
        await fake.wait_until(lambda: len(fake.connected_profiles(jw.address)) == 2)
        agent.pin = "9999"
        assert await fake.phone_pair(legacy.address) == "phone_rejected"
        agent.pin = "1234"
        assert await fake.phone_pair(legacy.address) == "paired"
        assert [m for m in agent.members() if m == "RequestPinCode"] == ["RequestPinCode"] * 2
    finally:
        bus.disconnect()
        await fake.stop()


async def test_local_pair_uses_callers_agent_and_replies_after_sdp(fake: FakeBluez, system_bus: PrivateBus,
                                                                   client: MessageBus) -> None:
    log = await SignalLog.attach(client)
    bus, agent = await _agent_client(system_bus)
    try:
        await bluez_call(bus, ADAPTER_PATH, ADAPTER, "StartDiscovery")
        await log.wait(lambda m: m.member == "InterfacesAdded" and m.body[0] == dev_path(PHONE))
        await bluez_call(bus, dev_path(PHONE), "org.bluez.Device1", "Pair")
        # The reply came after Paired (gdbus sends PropertiesChanged before the method return).
        assert any("Paired" in c for c, _ in log.props_changed(dev_path(PHONE)))
        assert agent.members()[0] == "RequestConfirmation"
        from dashbridge.daemon.dbus.errors import AlreadyExists as Exists

        with pytest.raises(Exists):
            await bluez_call(bus, dev_path(PHONE), "org.bluez.Device1", "Pair")
    finally:
        bus.disconnect()


async def test_local_pair_rejected_by_the_phone(fake: FakeBluez, system_bus: PrivateBus, client: MessageBus) -> None:
    from dashbridge.daemon.dbus.errors import AuthenticationError

    bus, _agent = await _agent_client(system_bus)
    fake.set_phone_accepts_pairing(PHONE, False)
    try:
        await bluez_call(bus, ADAPTER_PATH, ADAPTER, "StartDiscovery")
        await fake.wait_until(lambda: fake.device_props(PHONE) is not None)
        with pytest.raises(AuthenticationError) as err:
            await bluez_call(bus, dev_path(PHONE), "org.bluez.Device1", "Pair")
        assert err.value.name == "org.bluez.Error.AuthenticationFailed"
    finally:
        bus.disconnect()
