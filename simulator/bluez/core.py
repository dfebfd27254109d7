"""The fake bluetoothd's core: state, life cycle (start, restart, crash), the in-process world API
used by tests and the scenario runner, and the plumbing the parts share."""

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from dbus_fast import Message, MessageFlag
from dbus_fast.aio import MessageBus

from ..fakebus import Call, DictInterface, FakeInterface, ObjectServer
from ..phone import VirtualPhone
from .model import (
    ADAPTER,
    ADAPTER_PROPS_SINCE,
    AGENT,
    AGENT_MANAGER,
    BLUEZ,
    BUILTIN_PROFILES,
    DEVICE,
    DEVICE_PROPS_SINCE,
    DISCONNECTED_SIGNAL_SINCE,
    ERR,
    GATT_CHAR,
    METHODS,
    PROFILE,
    PROFILE_MANAGER,
    PROPS_IFACE,
    ROOT,
    SIGNALS,
    SIGS,
    VERSION_ENV,
    WRITABLE,
    Agent,
    AgentRequest,
    BluezTimings,
    Device,
    DeviceCall,
    GattObj,
    PhoneOutcome,
    Profile,
    parse_version,
    uuid16,
)

log = logging.getLogger("dashbridge.simulator.bluez")


class BluezIface(DictInterface):
    """One org.bluez interface of one object: its properties are a dict of the fake's state, its
    methods the fake's ``_m_<Interface>_<Member>(msg, iface)`` handlers."""

    def __init__(self, fake: "BluezCore", name: str, path: str, values: dict[str, Any],
                 setter: Callable[[str, Any], Awaitable[Any] | None] | None = None) -> None:
        super().__init__(name, SIGS.get(name, {}), values, writable=WRITABLE.get(name, ()), setter=setter)
        self.fake = fake
        self.path = path
        short = name.rsplit(".", 1)[-1]
        for member, (in_sig, out_sig) in METHODS.get(name, {}).items():
            self.method(member, in_sig, out_sig, self._bind(getattr(fake, f"_m_{short}_{member}")))
        sigs = dict(SIGNALS.get(name, {}))
        if name == DEVICE and fake.version < DISCONNECTED_SIGNAL_SINCE:
            sigs.pop("Disconnected", None)
        self.signals.update(sigs)

    def _bind(self, handler: Callable[[Message, "BluezIface"], Any]) -> Callable[..., Any]:
        def serve(call: Call, *args: Any) -> Any:
            result = handler(call.message, self)
            return list(result.body) if isinstance(result, Message) else result
        return serve

    def call_done(self, call: Call, started: float, outcome: str) -> None:
        if self.name == DEVICE:
            self.fake._log_call(call.message, started, outcome)


class BluezCore:
    """The state of a fake bluetoothd and what every part of it uses: life cycle, the world API,
    bus plumbing, device/adapter state.  :class:`~simulator.bluez.FakeBluez` adds the parts."""

    def __init__(self, bus_address: str, *, timings: BluezTimings | None = None, adapter: str = "hci0",
                 adapter_address: str = "00:1A:7D:DA:71:13", adapter_name: str = "dashbridge-sim",
                 adapter_class: int = 0x200420, powered: bool = True, control: bool = True,
                 version: str | None = None) -> None:
        self.address = bus_address
        # The BlueZ release to behave like ("5.66", "current"; default: $DASHBRIDGE_SIM_BLUEZ_VERSION).
        self.version_name = version if version is not None else os.environ.get(VERSION_ENV, "current")
        self.version = parse_version(self.version_name)
        self._sdp_fails: set[str] = set()  # phones whose service discovery fails (addresses)
        self.t = timings or BluezTimings()
        self.adapter_path = f"{ROOT}/{adapter}"
        self.adapter_address = adapter_address.upper()
        self._adapter_name = adapter_name
        self._adapter_class = adapter_class
        self._control_wanted = control
        self._bus: MessageBus | None = None
        self._control_bus: MessageBus | None = None
        self._server: ObjectServer | None = None  # the objects on the current connection
        self._devices: dict[str, Device] = {}  # by address
        self._agents: dict[str, Agent] = {}  # by sender
        self._default_stack: list[str] = []  # senders; [0] is the default agent
        self._profiles: list[Profile] = []
        self._discovery: set[str] = set()
        self._discovery_filters: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._profile_socks: dict[tuple[str, str], socket.socket] = {}
        self._profile_listeners: list[Callable[[str, str, bool], None]] = []
        self._tick = asyncio.Event()
        self._passkeys = itertools.count(1)
        self._generation = 0
        self._discoverable_timer: asyncio.TimerHandle | None = None
        self._pairable_timer: asyncio.TimerHandle | None = None
        self._inquiry: asyncio.Task[None] | None = None
        self.agent_log: list[AgentRequest] = []
        self._gatt: dict[str, GattObj] = {}
        self.gatt_writes: list[tuple[str, str, bytes]] = []  # (address, characteristic UUID, value)
        self.device_calls: list[DeviceCall] = []
        self._connect_faults: dict[str, list[tuple[str, str]]] = {}
        self.running = False
        self._adapter_state: dict[str, Any] = {
            "Address": self.adapter_address, "AddressType": "public", "Name": adapter_name, "Alias": adapter_name,
            "Class": adapter_class, "Connectable": True, "Powered": powered, "PowerState": "on" if powered else "off",
            "Discoverable": False, "DiscoverableTimeout": 180, "Pairable": True, "PairableTimeout": 0,
            "Discovering": False, "UUIDs": sorted({*BUILTIN_PROFILES, uuid16(0x111E), uuid16(0x1200)}),
            "Modalias": "usb:v1D6Bp0246d0550", "Roles": ["central", "peripheral"], "Manufacturer": 2, "Version": 9,
        }
        # Connectable is kept even where Adapter1 does not publish it (the controller still has it).
        self._connectable_state = True
        for prop, since in ADAPTER_PROPS_SINCE.items():
            if self.version < since:
                self._adapter_state[prop] = None  # absent from Adapter1 on this release

    def at_least(self, major: int, minor: int) -> bool:
        """The emulated BlueZ is this release or newer."""
        return self.version >= (major, minor)

    def _connectable(self) -> bool:
        v = self._adapter_state.get("Connectable")
        return self._connectable_state if v is None else bool(v)

    def _sdp_fail(self, dev: Device) -> bool:
        return dev.phone.address in self._sdp_fails or bool(getattr(dev.phone, "sdp_fails", False))

    def set_sdp_fails(self, address: str, fails: bool = True) -> None:
        """Phone option: its SDP server does not answer (service discovery fails after bonding)."""
        addr = self._dev(address).phone.address
        if fails:
            self._sdp_fails.add(addr)
        else:
            self._sdp_fails.discard(addr)

    def _props_guard(self, msg: Message) -> Message | None:
        """Properties.Set as bluetoothd's gdbus (gdbus/object.c, every version) checks it before the
        property's own setter: unknown (or absent) property -> UnknownProperty, read-only ->
        PropertyReadOnly, wrong type -> InvalidSignature."""
        if msg.interface != PROPS_IFACE or msg.member != "Set" or msg.signature != "ssv":
            return None
        iface, prop, value = msg.body
        obj = self._objects.get(msg.path or "", {})
        target = obj.get(iface)
        if not isinstance(target, DictInterface):
            return None
        absent = target.values.get(prop) is None and (
            (iface == ADAPTER and prop in ADAPTER_PROPS_SINCE) or (iface == DEVICE and prop in DEVICE_PROPS_SINCE))
        if prop not in target.sigs or absent:  # absent: not in this release's property table
            return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownProperty", f"No such property '{prop}'")
        if prop not in target.writable():
            return Message.new_error(msg, "org.freedesktop.DBus.Error.PropertyReadOnly",
                                     f"Property '{prop}' is not writable")
        if value.signature != target.sigs[prop]:
            return Message.new_error(msg, "org.freedesktop.DBus.Error.InvalidSignature",
                                     f"Invalid signature for '{prop}'")
        return None

    # ================================================================================================
    # life cycle
    # ================================================================================================
    async def stop(self) -> None:
        await self._go_down(clean=True)
        if self._control_bus is not None:
            self._control_bus.disconnect()
            self._control_bus = None
        for s in self._profile_socks.values():
            s.close()
        self._profile_socks.clear()

    async def restart(self, *, gap: float | None = None, clean: bool = False) -> None:
        """Simulated bluetoothd restart (crash by default: no ``Release`` to agents)."""
        await self._go_down(clean=clean)
        await asyncio.sleep(self.t.restart_gap if gap is None else gap)  # the simulated downtime
        await self._come_up()

    async def crash(self) -> None:
        """bluetoothd gone and not coming back (until :meth:`revive`)."""
        await self._go_down(clean=False)

    async def go_down_cleanly(self) -> None:
        """``systemctl stop bluetooth``: agents and profiles get ``Release`` first."""
        await self._go_down(clean=True)

    async def revive(self) -> None:
        await self._come_up()

    @property
    def owner(self) -> str | None:
        """The unique bus name bluetoothd currently has (None while down)."""
        return self._bus.unique_name if self._bus is not None and self.running else None

    async def _come_up(self) -> None:
        bus = await MessageBus(bus_address=self.address, negotiate_unix_fd=True).connect()
        self._bus = bus
        self._generation += 1
        server = ObjectServer(bus, owner=self, error_prefix=ERR,
                              bad_args_error=(ERR + "InvalidArguments", "Invalid arguments in method call"),
                              before_call=self._props_guard)
        server.on_name_lost = self._client_gone
        self._server = server
        await server.watch_clients()
        # /org/bluez is there before anyone looks: in GetManagedObjects, never in InterfacesAdded
        server.add(ROOT, self._iface(AGENT_MANAGER, ROOT, {}), self._iface(PROFILE_MANAGER, ROOT, {}), announce=False)
        self.running = True
        # bluetoothd owns the name with /org/bluez in place; adapters follow when mgmt reports them.
        await bus.request_name(BLUEZ)
        self._bump()
        gen = self._generation
        if self.t.adapter_delay > 0:
            await asyncio.sleep(self.t.adapter_delay)
        else:
            await asyncio.sleep(0)
        if gen != self._generation or not self.running:
            return
        self._announce_adapter()

    def _announce_adapter(self) -> None:
        assert self._server is not None
        self._server.add(self.adapter_path, self._iface(ADAPTER, self.adapter_path, self._adapter_state,
                                                        setter=self._set_adapter_prop))
        for dev in self._devices.values():
            if dev.paired:
                # Loaded from storage with its link key: Paired and Bonded (5.66 too, whatever SDP did).
                self._device_state(dev).update({"Paired": True, "Bonded": True})
                self._export_device(dev)
                if dev.services_known:
                    self._export_gatt(dev)  # [GATT] Cache = always: the tree is back with the device
        self._bump()

    async def _go_down(self, *, clean: bool) -> None:
        if not self.running:
            return
        bus = self._bus
        was_powered = bool(self._adapter_state["Powered"])
        if clean and bus is not None:
            self._clean_exit_signals()
        self.running = False
        self._generation += 1
        for task in list(self._tasks):
            task.cancel()
        for dev in self._devices.values():
            if dev.op is not None:
                dev.abort = "restart"
                dev.op.cancel()
            if dev.temp_timer:
                dev.temp_timer.cancel()
                dev.temp_timer = None
            if self._device_state(dev).get("Connected"):
                self._notify_profiles(dev, set(dev.profiles), connected=False)
            dev.profiles.clear()
        # Every connection drops with bluetoothd; temporary (unpaired) devices are forgotten by it
        # (the phones themselves stay in the world).
        for dev in self._devices.values():
            st = self._device_state(dev)
            st.update({"Connected": False, "ServicesResolved": False, "RSSI": None})
            if not dev.paired:
                dev.state = {}
                dev.services_known = False
        for t in (self._discoverable_timer, self._pairable_timer):
            if t:
                t.cancel()
        if self._inquiry:
            self._inquiry.cancel()
        self._adapter_state.update({"Discovering": False, "Discoverable": False})
        # AutoEnable (main.conf, default true): the adapter is powered again when bluetoothd is back.
        self._adapter_state.update({"Powered": was_powered, "PowerState": "on" if was_powered else "off"})
        self._agents.clear()
        self._default_stack.clear()
        self._profiles.clear()
        self._gatt.clear()
        for dev in self._devices.values():
            dev.gatt_paths = []
        self._discovery.clear()
        self._discovery_filters.clear()
        if self._server is not None:
            self._server.clear()  # every object, pending signal and pending reply goes
        if bus is not None:
            if clean:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(bus.release_name(BLUEZ), 1.0)
            bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.wait_for_disconnect(), 2.0)  # type: ignore[no-untyped-call]
        self._bus = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        self._bump()

    def _clean_exit_signals(self) -> None:
        """What a clean stop (SIGTERM) shows on the bus, in bluetoothd's order (src/main.c, adapter
        shutdown): the adapter powers off (connections drop), agents and profiles get ``Release``,
        the device objects and the adapter are removed; then the name goes."""
        server = self._server
        if server is None:
            return
        for dev in self._devices.values():
            if self._exported(dev) and self._device_state(dev).get("Connected"):
                self._set(dev, ServicesResolved=False, Connected=False)
        if self._adapter_state["Powered"]:
            self._set_adapter(Powered=False, PowerState="off", Discovering=False, Discoverable=False)
        server.flush()
        for agent in list(self._agents.values()):
            self._send_noreply(agent.sender, agent.path, AGENT, "Release")
        for prof in self._profiles:
            self._send_noreply(prof.sender, prof.path, PROFILE, "Release")
        for dev in self._devices.values():
            if self._exported(dev):
                for path in reversed(dev.gatt_paths):
                    server.remove(path)
                server.remove(dev.path)
        if self.adapter_path in server.objects:
            server.remove(self.adapter_path)
        server.flush()

    # ================================================================================================
    # world: the Python control API
    # ================================================================================================
    def add_phone(self, phone: VirtualPhone, *, paired: bool = False, trusted: bool | None = None,
                  connected: bool = False) -> str:
        """Put a phone in the world.  ``paired=True``: both sides already bonded (the device object
        exists with Paired/Bonded/UUIDs); ``connected=True``: it is also connected (as if it had been
        before anyone looked: no agent or profile calls are made)."""
        addr = phone.address.upper()
        if addr in self._devices:
            raise ValueError(f"phone {addr} already added")
        path = f"{self.adapter_path}/dev_{addr.replace(':', '_')}"
        dev = Device(phone, path)
        self._devices[addr] = dev
        if paired or connected:
            phone.bonded = True
            dev.paired = True
            dev.services_known = True
            st = self._new_device_state(dev)
            st.update({"Paired": True, "Bonded": True, "UUIDs": list(phone.uuids),
                       "Trusted": bool(trusted if trusted is not None else True)})
            if connected:
                st.update({"Connected": True, "ServicesResolved": True})
                dev.profiles = set(self._connectable_local_profiles(dev, builtin_only=True))
            if self.running and self.adapter_path in self._objects:
                self._export_device(dev)
        elif self.running and self._adapter_state["Discovering"] and phone.in_range and phone.discoverable:
            self._seen(dev)
        self._bump()
        return path

    def remove_phone(self, address: str) -> None:
        dev = self._dev(address)
        if dev.op:
            dev.abort = "removed"
            dev.op.cancel()
        self._unexport_device(dev)
        del self._devices[dev.phone.address]
        self._bump()

    def phone(self, address: str) -> VirtualPhone:
        return self._dev(address).phone

    async def set_in_range(self, address: str, in_range: bool) -> None:
        dev = self._dev(address)
        dev.phone.in_range = in_range
        if not in_range:
            if dev.op is not None:
                dev.abort = "canceled"
                dev.op.cancel()
            if self._exported(dev) and self._device_state(dev).get("Connected"):
                await self._drop_link(dev, "Timeout", "Connection timed out")
        else:
            if self._adapter_state["Discovering"] and dev.phone.discoverable and self.running:
                self._seen(dev)
            if dev.phone.auto_reconnect and dev.phone.bonded and dev.paired and self.running:
                self._spawn(self._remote_connect(dev))
        self._bump()

    def set_phone_accepts_pairing(self, address: str, accept: bool) -> None:
        self._dev(address).phone.accepts_pairing = accept

    def phone_forget_bond(self, address: str) -> None:
        """The user removed the car on the phone: the car's key no longer works (key-missing)."""
        dev = self._dev(address)
        dev.phone.bonded = False
        if self._exported(dev) and self._device_state(dev).get("Connected"):
            self._spawn(self._drop_link(dev, "Remote", "Connection terminated by remote user"))

    async def phone_pair(self, address: str, *, passkey: int | None = None) -> PhoneOutcome:
        """The phone starts pairing with the car (the car must be discoverable or already known).
        Returns when pairing ended: ``paired`` or why not."""
        dev = self._dev(address)
        if passkey is not None:
            dev.phone.passkey = passkey
        if not self.running or self.adapter_path not in self._objects:
            return "not_found"
        if dev.op is not None:
            return "busy"
        task = asyncio.get_running_loop().create_task(self._remote_pair(dev))
        dev.op, dev.op_kind = task, "pair"
        self._tasks.add(task)
        await asyncio.wait({task})
        self._tasks.discard(task)
        if dev.op is task:
            dev.op = None
        if task.cancelled():
            return "canceled"
        return task.result()

    async def phone_connect(self, address: str) -> bool:
        """The phone connects by itself (e.g. it came back in range).  True when a profile connected."""
        return await self._remote_connect(self._dev(address))

    async def phone_disconnect(self, address: str) -> None:
        dev = self._dev(address)
        if self._exported(dev) and self._device_state(dev).get("Connected"):
            await self._drop_link(dev, "Remote", "Connection terminated by remote user")

    async def set_powered(self, on: bool) -> None:
        """Someone switches the adapter (bluetoothctl power, rfkill): the daemon has to cope."""
        await self._set_powered(on)

    def profile_socket(self, address: str, uuid: str) -> socket.socket | None:
        """The phone's end of the socketpair handed to ``Profile1.NewConnection`` for this profile."""
        return self._profile_socks.get((address.upper(), uuid.lower()))

    def add_profile_listener(self, cb: Callable[[str, str, bool], None]) -> None:
        """``cb(address, local_uuid, connected)`` whenever a car-side profile connects/disconnects."""
        self._profile_listeners.append(cb)

    # -- inspection --------------------------------------------------------------------------------
    def adapter_props(self) -> dict[str, Any]:
        return {k: v for k, v in self._adapter_state.items() if v is not None}

    def device_props(self, address: str) -> dict[str, Any] | None:
        dev = self._devices.get(address.upper())
        if dev is None or not self._exported(dev):
            return None
        return {k: v for k, v in self._device_state(dev).items() if v is not None}

    def connected_profiles(self, address: str) -> set[str]:
        return set(self._dev(address).profiles)

    @property
    def agents(self) -> list[tuple[str, str, str]]:
        return [(a.sender, a.path, a.capability) for a in self._agents.values()]

    @property
    def default_agent(self) -> tuple[str, str] | None:
        if not self._default_stack:
            return None
        a = self._agents[self._default_stack[0]]
        return (a.sender, a.path)

    @property
    def profiles(self) -> list[tuple[str, str, str]]:
        return [(p.sender, p.path, p.uuid) for p in self._profiles]

    async def wait_until(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait for a condition on the fake's state (re-checked at every state change)."""
        async with asyncio.timeout(timeout):
            while not pred():
                ev = self._tick
                await ev.wait()

    def _bump(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    # ================================================================================================
    # bus plumbing
    # ================================================================================================
    @property
    def _objects(self) -> dict[str, dict[str, FakeInterface]]:
        """What is on the bus now: path -> interfaces (empty while down)."""
        return self._server.objects if self._server is not None and self.running else {}

    def _send_signal(self, path: str, iface: str, member: str, sig: str, body: list[Any]) -> None:
        """A signal at once (not after the batched ones, as bluetoothd's direct emits)."""
        if self._server is not None and self.running:
            self._server.emit(path, iface, member, sig, body, flush=False)

    def _iface(self, name: str, path: str, values: dict[str, Any],
               setter: Callable[[str, Any], Awaitable[Any] | None] | None = None) -> "BluezIface":
        return BluezIface(self, name, path, values, setter)

    def _send_noreply(self, dest: str, path: str, iface: str, member: str, sig: str = "",
                      body: list[Any] | None = None) -> None:
        if self._bus is None:
            return
        self._bus.send(Message(destination=dest, path=path, interface=iface, member=member, signature=sig,
                               body=body or [], flags=MessageFlag.NO_REPLY_EXPECTED))

    async def _call(self, dest: str, path: str, iface: str, member: str, sig: str, body: list[Any],
                    timeout: float, unix_fds: list[int] | None = None) -> Message | None:
        """None: no reply within ``timeout`` (or the peer/our connection went away)."""
        bus = self._bus
        if bus is None:
            return None
        msg = Message(destination=dest, path=path, interface=iface, member=member, signature=sig, body=body,
                      unix_fds=unix_fds or [])
        try:
            async with asyncio.timeout(timeout):
                return await bus.call(msg)
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            raise
        except Exception:  # our connection died under the call (simulated restart)
            return None

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fake bluez task failed", exc_info=task.exception())


    def _log_call(self, msg: Message, started: float, outcome: str) -> None:
        dev = self._dev_by_path(msg.path or "")
        self.device_calls.append(DeviceCall(msg.member or "", dev.phone.address if dev else "", msg.sender or "",
                                            started, asyncio.get_running_loop().time(), outcome))
        self._bump()


    # -- state helpers ------------------------------------------------------------------------------
    def _dev(self, address: str) -> Device:
        dev = self._devices.get(address.upper())
        if dev is None:
            raise KeyError(f"no phone {address} in the simulated world")
        return dev

    def _dev_by_path(self, path: str) -> Device | None:
        for d in self._devices.values():
            if d.path == path:
                return d
        return None

    def _device_state(self, dev: Device) -> dict[str, Any]:
        if not dev.state:
            self._new_device_state(dev)
        return dev.state

    def _new_device_state(self, dev: Device) -> dict[str, Any]:
        p = dev.phone
        # The remote name arrives as a NUL-terminated HCI string: bluetoothd stops at the first NUL.
        name = p.name.split("\x00", 1)[0]
        st: dict[str, Any] = {
            "Address": p.address, "AddressType": "public", "Name": name or None,
            "Alias": name or p.address.replace(":", "-"), "Class": p.device_class, "Icon": "phone",
            "Paired": False, "Bonded": False, "Trusted": False, "Blocked": False,
            "LegacyPairing": p.pairing == "legacy_pin", "CablePairing": False, "RSSI": None, "Connected": False,
            "UUIDs": None, "Modalias": None, "Adapter": self.adapter_path, "ServicesResolved": False,
            "WakeAllowed": False, "AdvertisingFlags": b"",
        }
        for prop, since in DEVICE_PROPS_SINCE.items():
            if self.version < since:
                st[prop] = None  # not on Device1 of this release (AdvertisingFlags: no LE advertising seen)
        dev.state = st
        return st

    def _exported(self, dev: Device) -> bool:
        return self.running and dev.path in self._objects

    def _export_device(self, dev: Device) -> None:
        if dev.path in self._objects or self.adapter_path not in self._objects:
            return
        assert self._server is not None
        self._server.add(dev.path, self._iface(DEVICE, dev.path, self._device_state(dev),
                                               setter=lambda name, value: self._set_device_prop(dev, name, value)))

    def _unexport_device(self, dev: Device) -> None:
        if dev.temp_timer:
            dev.temp_timer.cancel()
            dev.temp_timer = None
        self._unexport_gatt(dev)
        if dev.path in self._objects and self._server is not None:
            self._server.remove(dev.path, DEVICE)

    def _set(self, dev: Device, **props: Any) -> None:
        st = self._device_state(dev)
        for k, v in props.items():
            if st.get(k) != v:
                st[k] = v
                if self._exported(dev) and self._server is not None:
                    self._server.changed(dev.path, DEVICE, [k])
        self._bump()

    def _set_adapter(self, **props: Any) -> None:
        for k, v in props.items():
            if self._adapter_state.get(k) != v:
                self._adapter_state[k] = v
                if self.adapter_path in self._objects and self._server is not None:
                    self._server.changed(self.adapter_path, ADAPTER, [k])
        self._bump()

    def _is_temporary(self, dev: Device) -> bool:
        st = self._device_state(dev)
        return not dev.paired and not st.get("Trusted") and not st.get("Connected")

    def _seen(self, dev: Device) -> None:
        """An inquiry result: create/refresh a (temporary) device with RSSI."""
        if dev.phone.address not in self._devices:
            return
        self._export_device(dev)
        self._set(dev, RSSI=dev.phone.rssi)
        self._arm_temporary(dev)

    def _arm_temporary(self, dev: Device) -> None:
        if dev.temp_timer:
            dev.temp_timer.cancel()
            dev.temp_timer = None
        if self._is_temporary(dev):
            dev.temp_timer = asyncio.get_running_loop().call_later(self.t.temporary_timeout, self._expire, dev)

    def _expire(self, dev: Device) -> None:
        dev.temp_timer = None
        if self._is_temporary(dev) and dev.op is None and self._exported(dev):
            self._unexport_device(dev)
            self._bump()

    def _client_gone(self, sender: str) -> None:
        """A client left the bus: its agent, profiles and discovery session go with it."""
        if sender in self._agents:
            del self._agents[sender]
            if sender in self._default_stack:
                self._default_stack.remove(sender)
                self._default_agent_changed()
        self._profiles = [p for p in self._profiles if p.sender != sender]
        for path, g in self._gatt.items():
            if sender in g.sessions:
                g.sessions.discard(sender)
                if not g.sessions:
                    self._set_obj(path, GATT_CHAR, Notifying=False)
        if sender in self._discovery:
            self._discovery.discard(sender)
            self._discovery_filters.pop(sender, None)
            if not self._discovery:
                self._stop_discovering()
        self._bump()

    def _default(self) -> Agent | None:
        return self._agents[self._default_stack[0]] if self._default_stack else None


    # ================================================================================================
    # provided by the parts (adapter, devices, agents, profiles, gatt); FakeBluez has them all
    # ================================================================================================
    def _set_adapter_prop(self, name: str, value: Any) -> Awaitable[Any] | None:
        raise NotImplementedError

    async def _set_powered(self, on: bool) -> None:
        raise NotImplementedError

    def _default_agent_changed(self) -> None:
        raise NotImplementedError

    def _stop_discovering(self) -> None:
        raise NotImplementedError

    def _set_device_prop(self, dev: Device, name: str, value: Any) -> None:
        raise NotImplementedError

    async def _page(self, dev: Device) -> None:
        raise NotImplementedError

    async def _drop_link(self, dev: Device, reason: str, message: str) -> None:
        raise NotImplementedError

    async def _remote_connect(self, dev: Device) -> bool:
        raise NotImplementedError

    async def _agent_request(self, agent: Agent, member: str, sig: str, body: list[Any],
                             dev: Device) -> tuple[bool, list[Any]]:
        raise NotImplementedError

    async def _local_pair(self, dev: Device, agent: Agent | None) -> None:
        raise NotImplementedError

    async def _remote_pair(self, dev: Device) -> PhoneOutcome:
        raise NotImplementedError

    def _connectable_local_profiles(self, dev: Device, *, builtin_only: bool = False) -> list[str]:
        raise NotImplementedError

    async def _connect_profile(self, dev: Device, uuid: str) -> bool:
        raise NotImplementedError

    def _notify_profiles(self, dev: Device, uuids: set[str], *, connected: bool) -> None:
        raise NotImplementedError

    async def _incoming_profiles(self, dev: Device) -> None:
        raise NotImplementedError

    def _export_gatt(self, dev: Device) -> None:
        raise NotImplementedError

    def _unexport_gatt(self, dev: Device) -> None:
        raise NotImplementedError

    def _set_obj(self, path: str, iface: str, **props: Any) -> None:
        raise NotImplementedError
