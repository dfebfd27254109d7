"""``Device1``: connecting and disconnecting (car- and phone-initiated), link loss, device
properties, and the device helpers for tests (fault injection, call log)."""

import asyncio
from collections.abc import Awaitable
from typing import Any

from dbus_fast import Message

from .core import BluezCore, BluezIface
from .model import (
    DEVICE,
    DISCONNECTED_SIGNAL_SINCE,
    ERR,
    GATT_CHAR,
    LOCAL_TO_REMOTE,
    PROFILE_UNAVAILABLE_SINCE,
    REASON_PREFIX,
    BluezError,
    Device,
    DeviceCall,
    parse_uuid,
)


class DevicesPart(BluezCore):
    # ================================================================================================
    # Device1
    # ================================================================================================
    def _set_device_prop(self, dev: Device, name: str, value: Any) -> None:
        if name == "Alias":
            self._set(dev, Alias=value or dev.phone.name or dev.phone.address.replace(":", "-"))
        elif name == "Blocked":
            self._set(dev, Blocked=bool(value))
            if value and self._device_state(dev).get("Connected"):
                self._spawn(self._drop_link(dev, "Local", "Connection terminated by local host"))
        else:
            self._set(dev, **{name: bool(value)})
        self._arm_temporary(dev)

    def _device_for(self, obj: BluezIface) -> Device:
        dev = self._dev_by_path(obj.path)
        if dev is None:
            raise BluezError("org.freedesktop.DBus.Error.UnknownObject", "device gone")
        return dev

    def _m_Device1_Connect(self, msg: Message, obj: BluezIface) -> Message | Awaitable[Any]:
        dev = self._device_for(obj)
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "br-connection-adapter-not-powered")
        if dev.op is not None:
            raise BluezError("InProgress", "br-connection-busy")
        st = self._device_state(dev)
        if st.get("Connected") and dev.profiles and set(self._connectable_local_profiles(dev)) <= dev.profiles:
            return Message.new_method_return(msg)  # already connected: success (code; doc says AlreadyConnected)
        return self._run_op(dev, "connect", self._do_connect(dev))

    def _m_Device1_Disconnect(self, msg: Message, obj: BluezIface) -> Message | Awaitable[Any]:
        dev = self._device_for(obj)
        if dev.op is not None:
            dev.abort = "canceled"
            dev.op.cancel()
        if not self._device_state(dev).get("Connected"):
            return Message.new_method_return(msg)

        async def disconnect() -> None:
            await self._drop_link(dev, "Local", "Connection terminated by local host")
        return disconnect()

    def _m_Device1_ConnectProfile(self, msg: Message, obj: BluezIface) -> Message | Awaitable[Any]:
        dev = self._device_for(obj)
        (text,) = msg.body
        uuid = parse_uuid(text)
        if uuid is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "Resource Not Ready")
        # bluetoothd matches the argument against each service's *remote* UUID
        # (find_connectable_service in src/device.c): oFono asks for HFP AG 0000111f, the phone's
        # side.  A local UUID is accepted too, as the simulator's own callers use it.
        for local in self._connectable_local_profiles(dev):
            if LOCAL_TO_REMOTE.get(local) == uuid:
                uuid = local
                break
        if uuid in dev.profiles:
            return Message.new_method_return(msg)
        if uuid not in self._connectable_local_profiles(dev):
            raise self._profile_unavailable(from_connect=True)
        if dev.op is not None:
            raise BluezError("InProgress", "br-connection-busy")
        return self._run_op(dev, "connect", self._do_connect(dev, only=uuid))

    def _m_Device1_DisconnectProfile(self, msg: Message, obj: BluezIface) -> Message:
        dev = self._device_for(obj)
        (text,) = msg.body
        uuid = parse_uuid(text)
        if uuid is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        if uuid in dev.profiles:
            dev.profiles.discard(uuid)
            self._notify_profiles(dev, {uuid}, connected=False)
        return Message.new_method_return(msg)

    def _m_Device1_Pair(self, msg: Message, obj: BluezIface) -> Message | Awaitable[Any]:
        dev = self._device_for(obj)
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "Resource Not Ready")
        if dev.op is not None:
            raise BluezError("InProgress", "In Progress")
        if dev.paired:
            raise BluezError("AlreadyExists", "Already Exists")
        agent = self._agents.get(msg.sender or "") or self._default()
        return self._run_op(dev, "pair", self._local_pair(dev, agent))

    def _m_Device1_CancelPairing(self, msg: Message, obj: BluezIface) -> Message:
        dev = self._device_for(obj)
        if dev.op is None or dev.op_kind != "pair":
            raise BluezError("DoesNotExist", "Does Not Exist")
        dev.abort = "canceled"
        dev.op.cancel()
        return Message.new_method_return(msg)

    def _run_op(self, dev: Device, kind: str, coro: Awaitable[None]) -> Awaitable[None]:
        """Start a device operation now (so a second call in the same iteration sees it busy)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        dev.op, dev.op_kind, dev.abort = task, kind, ""
        self._bump()
        return self._await_op(dev, kind, task)

    async def _await_op(self, dev: Device, kind: str, task: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait({task})
        finally:
            if dev.op is task:
                dev.op = None
                dev.op_kind = ""
            self._bump()
        if task.cancelled():
            if kind == "pair":
                raise BluezError("AuthenticationCanceled", "Authentication Canceled")
            raise BluezError("Failed", "br-connection-canceled")
        task.result()


    async def _page(self, dev: Device) -> None:
        """ACL set-up from the car: page timeout when the phone is away."""
        if not dev.phone.in_range:
            await asyncio.sleep(self.t.page_timeout)
            raise BluezError("Failed", "br-connection-page-timeout")
        await asyncio.sleep(self.t.connect_delay)
        if not dev.phone.in_range:
            raise BluezError("Failed", "br-connection-page-timeout")

    async def _do_connect(self, dev: Device, only: str | None = None) -> None:
        st = self._device_state(dev)
        faults = self._connect_faults.get(dev.phone.address)
        if faults:
            short, text = faults.pop(0)
            await asyncio.sleep(self.t.connect_delay)
            raise BluezError(short, text)
        if not st.get("Connected"):
            await self._page(dev)
            if dev.paired and not dev.phone.bonded:
                # The phone forgot the car: authentication fails on the link; nothing is announced.
                raise BluezError("Failed", "br-connection-key-missing")
            if st.get("Blocked"):
                raise BluezError("Failed", "br-connection-refused")
            self._set(dev, Connected=True)
        if not dev.services_known:
            await asyncio.sleep(self.t.sdp_delay)
            if self._sdp_fail(dev):
                # src/device.c browse_cb: the search failed -> ERR_BREDR_CONN_SDP_SEARCH (all releases)
                raise BluezError("Failed", "br-connection-sdp-search")
            dev.services_known = True
            self._set(dev, UUIDs=list(dev.phone.uuids))
        self._export_gatt(dev)
        if not st.get("ServicesResolved"):
            self._set(dev, ServicesResolved=True)
        wanted = [only] if only else self._connectable_local_profiles(dev)
        if not dev.paired:
            # An unpaired phone refuses profile connections that need authentication (simplified:
            # real bluetoothd would start pairing on the security request).
            wanted = []
        for uuid in wanted:
            if uuid not in dev.profiles and await self._connect_profile(dev, uuid):
                dev.profiles.add(uuid)
        if not dev.profiles:
            await self._drop_link(dev, "Local", "Connection terminated by local host")
            raise self._profile_unavailable(from_connect=not wanted)
        self._arm_temporary(dev)

    def _profile_unavailable(self, *, from_connect: bool) -> BluezError:
        """No profile to connect, by release (src/device.c connect_profiles, src/error.c):
        5.84+: ``BREDR.ProfileUnavailable "No more profiles to connect to"``; before: ``NotAvailable
        br-connection-profile-unavailable`` when nothing was left to try, ``Failed`` with the same
        string when connecting the next profile failed."""
        if self.version >= PROFILE_UNAVAILABLE_SINCE:  # the name has a dot: give it whole
            return BluezError(ERR + "BREDR.ProfileUnavailable", "No more profiles to connect to")
        if from_connect:
            return BluezError("NotAvailable", "br-connection-profile-unavailable")
        return BluezError("Failed", "br-connection-profile-unavailable")


    async def _drop_link(self, dev: Device, reason: str, message: str) -> None:
        st = self._device_state(dev)
        if not st.get("Connected"):
            return
        gone = set(dev.profiles)
        dev.profiles.clear()
        self._notify_profiles(dev, gone, connected=False)
        for path in dev.gatt_paths:  # notification sessions end with the link; the objects stay
            g = self._gatt.get(path)
            if g is not None and g.sessions:
                g.sessions.clear()
                self._set_obj(path, GATT_CHAR, Notifying=False)
        # The ACL goes after the grace; bluetoothd (device_remove_connection, every release) then clears
        # ServicesResolved and Connected in one main-loop turn: ONE PropertiesChanged with both.
        await asyncio.sleep(self.t.disconnect_grace)
        if not st.get("Connected"):
            return
        if self._exported(dev) and self.version >= DISCONNECTED_SIGNAL_SINCE:
            # Device1.Disconnected(reason, message) exists from 5.83, sent before the property change.
            self._send_signal(dev.path, DEVICE, "Disconnected", "ss", [REASON_PREFIX + reason, message])
        self._set(dev, ServicesResolved=False, Connected=False)
        self._arm_temporary(dev)

    async def _remote_connect(self, dev: Device) -> bool:
        """The phone connects to the car: ACL, then each profile (AuthorizeService when untrusted)."""
        if not (self.running and self._adapter_state["Powered"] and self._connectable()):
            return False
        if not (dev.phone.in_range and dev.phone.bonded and dev.paired) or dev.op is not None:
            return False
        st = self._device_state(dev)
        if st.get("Blocked"):
            return False
        self._export_device(dev)
        gen = self._generation
        await asyncio.sleep(self.t.connect_delay)
        if gen != self._generation:
            return False
        self._set(dev, Connected=True)
        if dev.services_known:
            self._export_gatt(dev)
            self._set(dev, ServicesResolved=True)
        await self._incoming_profiles(dev)
        if not dev.profiles:
            await self._drop_link(dev, "Remote", "Connection terminated by remote user")
            return False
        return True


    # ================================================================================================
    # helpers for tests
    # ================================================================================================
    def trust(self, address: str, trusted: bool = True) -> None:
        self._set(self._dev(address), Trusted=trusted)

    def fail_next_connects(self, address: str, count: int = 1, error: str = "Failed",
                           message: str = "br-connection-page-timeout") -> None:
        """Fault injection: the next ``count`` Connect()s of this phone fail with ``error``."""
        self._connect_faults.setdefault(address.upper(), []).extend([(error, message)] * count)

    def calls_of(self, member: str, address: str | None = None) -> list[DeviceCall]:
        want = address.upper() if address else None
        return [c for c in self.device_calls if c.member == member and want in (None, c.address)]

