"""The fake org.ofono behaves like oFono (reference §4, §7 items 16-18), seen from a plain client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.call import call, unwrap
from dashbridge.daemon.dbus.errors import BusError
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.ofono import SIM_IFACE, SIM_PATH, FakeOfono, modem_path
from dashbridge.simulator.phone import VirtualPhone

A = "AA:00:00:00:00:01"
MP = modem_path(A)
VCM = names.OFONO_VOICECALL_MANAGER_IFACE


def deep_unwrap(v: Any) -> Any:
    """Variants stripped, structs (tuples) as lists."""
    if isinstance(v, (list, tuple)):
        return [deep_unwrap(x) for x in v]
    if isinstance(v, dict):
        return {k: deep_unwrap(x) for k, x in v.items()}
    return unwrap(v)


class Client:
    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.log: list[tuple[str, str, str, list[Any]]] = []  # (kind, path, member, body)
        self.event = asyncio.Event()
        bus.add_message_handler(self._on)

    def _on(self, msg: Message) -> None:
        # Logged in arrival order (a reply's awaiting coroutine resumes later than this handler).
        if msg.message_type == MessageType.SIGNAL and (msg.interface or "").startswith("org.ofono"):
            self.log.append(("signal", msg.path or "", msg.member or "", deep_unwrap(list(msg.body))))
            self.event.set()
        elif msg.message_type in (MessageType.METHOD_RETURN, MessageType.ERROR):
            self.log.append(("reply", "", "", []))

    async def call(self, path: str, iface: str, member: str, sig: str = "", body: list[Any] | None = None) -> Any:
        return deep_unwrap(await call(self.bus, names.OFONO_NAME, path, iface, member, sig, body or [], timeout=3))

    async def error(self, path: str, iface: str, member: str, sig: str = "", body: list[Any] | None = None) -> str:
        try:
            await self.call(path, iface, member, sig, body)
        except BusError as exc:
            return exc.name
        raise AssertionError(f"{member} succeeded")

    async def until(self, pred: Any, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.event.clear()
                await self.event.wait()

    def signals(self, member: str) -> list[tuple[str, list[Any]]]:
        return [(p, b) for k, p, m, b in self.log if k == "signal" and m == member]


@pytest.fixture
async def env(system_bus: PrivateBus) -> AsyncIterator[tuple[FakeOfono, Client]]:
    bus = await MessageBus(bus_address=system_bus.address).connect()
    await call(bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
               ["type='signal',sender='org.ofono'"])
    client = Client(bus)
    fake = await FakeOfono.start(system_bus.address, [VirtualPhone(A, name="Pixel"),
                                                      VirtualPhone("CC:00:00:00:00:03", profiles=("a2dp",))])
    yield fake, client
    await fake.stop()
    bus.disconnect()


async def power(client: Client) -> None:
    await client.call(MP, names.OFONO_MODEM_IFACE, "SetProperty", "sv", ["Powered", Variant("b", True)])
    await client.until(lambda: any(b[0] == "Interfaces" and VCM in b[1]
                                   for _p, b in client.signals("PropertyChanged")))


async def test_manager_modems_and_no_object_manager(env: tuple[FakeOfono, Client]) -> None:
    _fake, c = env
    (modems,) = await c.call("/", names.OFONO_MANAGER_IFACE, "GetModems")
    assert [m[0] for m in modems] == [MP]  # only the phone offering HFP has a modem
    props = modems[0][1]
    # As real oFono 1.31: no Serial until powered; the path names the device.
    assert props["Type"] == "hfp" and "Serial" not in props and props["Name"] == "Pixel"
    assert props["Powered"] is False and props["Online"] is False and props["Interfaces"] == []
    err = await c.error("/", names.OBJECT_MANAGER_IFACE, "GetManagedObjects")
    assert err == names.ERR_UNKNOWN_METHOD
    assert await c.call(MP, names.PROPERTIES_IFACE, "GetAll", "s", [names.OFONO_MODEM_IFACE]) == [{}]
    assert await c.error(MP, names.OFONO_MODEM_IFACE, "SetProperty", "sv",
                         ["Online", Variant("b", True)]) == names.OFONO_ERR_NOT_IMPLEMENTED


async def test_powering_brings_interfaces_in_order(env: tuple[FakeOfono, Client]) -> None:
    _fake, c = env
    await power(c)
    changes = [b for p, b in c.signals("PropertyChanged") if p == MP]
    assert [b[0] for b in changes[:4]] == ["Powered", "Online", "Serial", "Interfaces"]
    # The voice-call atom registers last, in a second Interfaces change (as real oFono).
    ifaces = [b[1] for b in changes if b[0] == "Interfaces"]
    assert VCM not in ifaces[0] and VCM in ifaces[-1]
    (props,) = await c.call(MP, names.OFONO_MODEM_IFACE, "GetProperties")
    assert props["Serial"] == A
    assert set(props["Interfaces"]) >= {VCM, names.OFONO_HANDSFREE_IFACE, names.OFONO_NETREG_IFACE,
                                        names.OFONO_CALLVOLUME_IFACE}
    (hf,) = await c.call(MP, names.OFONO_HANDSFREE_IFACE, "GetProperties")
    assert hf["BatteryChargeLevel"] == 5 and hf["InbandRinging"] is True
    (nr,) = await c.call(MP, names.OFONO_NETREG_IFACE, "GetProperties")
    assert nr["Strength"] == 80 and nr["Name"] == "SimNet" and nr["Status"] == "registered"
    assert await c.error(MP, names.OFONO_CALLVOLUME_IFACE, "SetProperty", "sv",
                         ["Muted", Variant("b", True)]) == names.OFONO_ERR_NOT_IMPLEMENTED


async def test_dial_reply_comes_before_call_added(env: tuple[FakeOfono, Client]) -> None:
    fake, c = env
    fake.side(A).phone.hfp_alert_after = None
    await power(c)
    start = len(c.log)
    path = await c.call(MP, VCM, "Dial", "ss", ["+4412345", ""])
    assert path == [MP + "/voicecall01"]
    await c.until(lambda: bool(c.signals("CallAdded")))
    kinds = [(k, m) for k, _p, m, _b in c.log[start:]]
    assert kinds.index(("reply", "")) < kinds.index(("signal", "CallAdded"))
    added = c.signals("CallAdded")[0][1]
    assert added[0] == MP + "/voicecall01"
    assert added[1]["State"] == "dialing" and added[1]["LineIdentification"] == "+4412345"
    assert await c.error(MP, VCM, "Dial", "ss", ["12ab", ""]) == names.OFONO_ERR_INVALID_FORMAT
    assert await c.error(MP, VCM, "Dial", "ss", ["123", "sometimes"]) == names.OFONO_ERR_INVALID_FORMAT
    # One dialing call at a time (src/voicecall.c voicecall_dial).
    assert await c.error(MP, VCM, "Dial", "ss", ["456", ""]) == names.OFONO_ERR_FAILED


async def test_hangup_order_disconnect_reason_state_call_removed(env: tuple[FakeOfono, Client]) -> None:
    fake, c = env
    await power(c)
    fake.incoming_call(A, "555")
    await c.until(lambda: bool(c.signals("CallAdded")))
    cp = c.signals("CallAdded")[0][1][0]
    assert await c.error(cp, names.OFONO_VOICECALL_IFACE, "Deflect", "s", ["123"]) == names.OFONO_ERR_NOT_IMPLEMENTED
    await c.call(cp, names.OFONO_VOICECALL_IFACE, "Answer")
    await c.until(lambda: any(b[0] == "StartTime" for p, b in c.signals("PropertyChanged") if p == cp))
    states = [b for p, b in c.signals("PropertyChanged") if p == cp]
    assert [b[0] for b in states] == ["State", "StartTime"]  # StartTime after State, as oFono
    assert await c.error(cp, names.OFONO_VOICECALL_IFACE, "Answer") == names.OFONO_ERR_FAILED
    start = len(c.log)
    await c.call(cp, names.OFONO_VOICECALL_IFACE, "Hangup")
    await c.until(lambda: bool(c.signals("CallRemoved")))
    seq = [(k, m, b[0] if b and k == "signal" and m == "PropertyChanged" else "") for k, _p, m, b in c.log[start:]]
    assert seq == [("reply", "", ""), ("signal", "DisconnectReason", ""),
                   ("signal", "PropertyChanged", "State"), ("signal", "CallRemoved", "")]
    assert c.signals("DisconnectReason")[0][1] == ["local"]


async def test_link_loss_removes_interfaces_without_call_removed(env: tuple[FakeOfono, Client]) -> None:
    fake, c = env
    await power(c)
    fake.incoming_call(A, "555")
    await c.until(lambda: bool(c.signals("CallAdded")))
    fake.link_loss(A)
    await c.until(lambda: any(p == MP and b == ["Interfaces", []] for p, b in c.signals("PropertyChanged")))
    assert c.signals("CallRemoved") == []
    assert await c.error(MP, VCM, "GetCalls") == names.ERR_UNKNOWN_METHOD
    # The phone still rings; when the link is back the call is announced again (its CLCC).
    assert [x.state for x in fake.calls(A)] == ["incoming"]
    await power(c)
    await c.until(lambda: len(c.signals("CallAdded")) == 2)
    assert await c.call(MP, VCM, "GetCalls") == [[[MP + "/voicecall01", c.signals("CallAdded")[1][1][1]]]]


async def test_swap_hold_and_answer_rules(env: tuple[FakeOfono, Client]) -> None:
    fake, c = env
    await power(c)
    assert await c.error(MP, VCM, "SwapCalls") == names.OFONO_ERR_FAILED  # nothing to swap
    fake.incoming_call(A, "1")
    fake.remote_answer(A)
    fake.call_waiting(A, "2")
    assert [x.state for x in fake.calls(A)] == ["active", "waiting"]
    assert await c.error(MP, VCM, "SwapCalls") == names.OFONO_ERR_FAILED  # a call is waiting
    mark = len(c.log)
    await c.call(MP, VCM, "HoldAndAnswer")
    assert [x.state for x in fake.calls(A)] == ["held", "active"]  # the phone's own view
    # As oFono 1.31: the answered call is signalled active first, the other held after the CLCC poll.
    await c.until(lambda: sum(1 for k, _p, m, b in c.log[mark:] if m == "PropertyChanged" and b[0] == "State") >= 2)
    states = [(p, b[1]) for k, p, m, b in c.log[mark:] if m == "PropertyChanged" and b[0] == "State"]
    assert states == [(MP + "/voicecall02", "active"), (MP + "/voicecall01", "held")]
    await c.call(MP, VCM, "SwapCalls")
    assert [x.state for x in fake.calls(A)] == ["active", "held"]
    (members,) = await c.call(MP, VCM, "CreateMultiparty")
    assert sorted(members) == [MP + "/voicecall01", MP + "/voicecall02"]
    await c.call(MP, VCM, "HangupAll")
    assert fake.calls(A) == []


async def test_control_interface_over_dbus(env: tuple[FakeOfono, Client]) -> None:
    fake, c = env
    await power(c)

    async def ctl(member: str, sig: str = "", body: list[Any] | None = None) -> Any:
        return deep_unwrap(await call(c.bus, names.OFONO_NAME, SIM_PATH, SIM_IFACE, member, sig, body or [], timeout=3))

    assert await ctl("IncomingCall", "sss", [A, "555", "Bob"]) == [1]
    await ctl("RemoteAnswer", "su", [A, 0])
    await ctl("CallWaiting", "sss", [A, "556", ""])
    assert await ctl("GetCalls", "s", [A]) == [[[1, "555", "Bob", "active", "incoming"],
                                                [2, "556", "", "waiting", "incoming"]]]
    await ctl("RemoteHangup", "su", [A, 2])
    await ctl("SetBattery", "sy", [A, 2])
    await ctl("SetSignal", "sy", [A, 3])
    await ctl("SetOperator", "ss", [A, "Other"])
    await c.until(lambda: any(b == ["Name", "Other"] for _p, b in c.signals("PropertyChanged")))
    try:
        await ctl("RemoteHangup", "su", [A, 9])
    except BusError as exc:
        assert exc.name == "org.dashbridge.Sim.Error.Failed"
    else:
        raise AssertionError("hung up a call that does not exist")
    await ctl("LinkLoss", "s", [A])
    await c.until(lambda: any(p == MP and b == ["Powered", False] for p, b in c.signals("PropertyChanged")))
    await ctl("SetUnresponsive", "b", [True])
    err = await asyncio.gather(call(c.bus, names.OFONO_NAME, MP, names.OFONO_MODEM_IFACE, "GetProperties",
                                    timeout=0.3), return_exceptions=True)
    assert isinstance(err[0], BusError) and err[0].name == names.ERR_TIMEOUT
    await ctl("SetUnresponsive", "b", [False])
    assert fake.unresponsive is False


async def test_restart_drops_the_name_and_comes_back_unpowered(env: tuple[FakeOfono, Client]) -> None:
    fake, c = env
    await power(c)
    fake.incoming_call(A, "555")
    old_owner = fake.bus.unique_name if fake.bus else ""
    await fake.restart()
    assert fake.bus is not None and fake.bus.unique_name != old_owner
    (modems,) = await c.call("/", names.OFONO_MANAGER_IFACE, "GetModems")
    assert modems[0][1]["Powered"] is False
    assert [x.state for x in fake.calls(A)] == ["incoming"]  # the phone still rings
