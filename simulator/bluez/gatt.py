"""GATT (what bleak uses; reference §1.7, §6.2, §7 item 9): service/characteristic/descriptor
objects, ReadValue/WriteValue/StartNotify/StopNotify and notifications.

Two kinds of phone services: static data (``VirtualPhone.gatt``, a list of :class:`GattService`)
and GATT apps (``VirtualPhone.companion``, a :class:`simulator.companion.GattApp`) whose reads and
writes are answered by the app, per connection (``link``: a new id on every Connected=true).
An app's notifying characteristics have a CCCD descriptor object (0x2902) as in bluetoothd;
``NotifyAcquired``/``WriteAcquired`` exist only where the flags allow (src/gatt-client.c).
The objects stay across disconnection ([GATT] Cache = always, the default: gatt_cache_is_enabled
in src/device.c); :attr:`GattPart.gatt_cache` = ``"yes"`` (only for paired devices) or ``"no"``
removes them when the link goes, as bluetoothd's gatt_db_clear does."""

import asyncio
import contextlib
import inspect
import itertools
from collections.abc import Awaitable
from typing import Any

from dbus_fast import Message, Variant

from ..fakebus import DictInterface
from .core import BluezCore, BluezIface
from .model import (
    CCCD_UUID,
    GATT_CHAR,
    GATT_DESC,
    GATT_HANDLE_SINCE,
    GATT_SERVICE,
    PROPS_IFACE,
    BluezError,
    Device,
    GattCharacteristic,
    GattObj,
    att_error,
)

_LINKS = itertools.count(1)


def _apps(dev: Device) -> list[Any]:
    app = getattr(dev.phone, "companion", None)
    return [app] if app is not None and getattr(app, "running", True) else []


class GattPart(BluezCore):
    gatt_cache = "always"  # main.conf [GATT] Cache: always | yes | no

    # -- GATT (what bleak uses; reference §1.7, §6.2, §7 item 9) --------------------------------------
    def _export_gatt(self, dev: Device) -> None:
        """Service/characteristic objects (paths with 4 lower-case hex digits of the handle)."""
        apps = _apps(dev)
        if not (dev.phone.gatt or apps) or dev.gatt_paths or not self._exported(dev):
            return
        server = self._server
        assert server is not None
        mtu = int(getattr(dev.phone, "att_mtu", 517))
        handle = 0x000A
        services: list[tuple[str, bool, list[GattCharacteristic], Any]] = [
            (svc.uuid, svc.primary, svc.characteristics, None) for svc in dev.phone.gatt]
        for app in apps:
            services.append((app.service_uuid, True,
                             [GattCharacteristic(u, tuple(f)) for u, f in app.characteristics()], app))
            app.attach(lambda uuid, value, addr=dev.phone.address: self._app_notify(addr, uuid, value))
        for uuid, primary, chars, app in services:
            spath = f"{dev.path}/service{handle:04x}"
            self._gatt[spath] = GattObj(dev, None, app=app)
            dev.gatt_paths.append(spath)
            server.add(spath, self._iface(GATT_SERVICE, spath, {
                "UUID": uuid.lower(), "Primary": primary, "Device": dev.path, "Includes": [],
                "Handle": handle}))
            handle += 1
            for ch in chars:
                cpath = f"{spath}/char{handle:04x}"
                flags = set(ch.flags)
                notifies = bool({"notify", "indicate"} & flags)
                self._gatt[cpath] = GattObj(dev, ch, app=app)
                dev.gatt_paths.append(cpath)
                server.add(cpath, self._iface(GATT_CHAR, cpath, {
                    "UUID": ch.uuid.lower(), "Service": spath, "Value": b"",
                    "Notifying": False if notifies else None, "Flags": list(ch.flags), "Handle": handle,
                    "MTU": mtu, "WriteAcquired": False if "write-without-response" in flags else None,
                    "NotifyAcquired": False if "notify" in flags else None}))
                handle += 2  # declaration + value
                if notifies and app is not None:
                    dpath = f"{cpath}/desc{handle:04x}"
                    self._gatt[dpath] = GattObj(dev, None, app=app, desc_uuid=CCCD_UUID, parent=cpath)
                    dev.gatt_paths.append(dpath)
                    server.add(dpath, self._iface(GATT_DESC, dpath, {
                        "UUID": CCCD_UUID, "Characteristic": cpath, "Value": b"",
                        "Handle": handle if self.version >= GATT_HANDLE_SINCE else None}))
                    handle += 1
            handle += 1

    def gatt_app_changed(self, address: str) -> None:
        """The phone's app started, stopped or changed its service: the objects are built again
        (bluetoothd after a Service Changed indication) and Device1.UUIDs follows."""
        dev = self._dev(address)
        self._unexport_gatt(dev)
        st = self._device_state(dev)
        if st.get("Connected") and st.get("ServicesResolved"):
            self._export_gatt(dev)
        if self._exported(dev):
            self._set(dev, UUIDs=self._uuids(dev))

    def _uuids(self, dev: Device) -> list[str]:
        base = list(dev.phone.uuids) if dev.services_known else []
        for app in _apps(dev):
            if app.service_uuid.lower() not in base:
                base.append(app.service_uuid.lower())
        return base

    def _app_notify(self, address: str, uuid: str, value: bytes) -> None:
        dev = self._devices.get(address.upper())
        if dev is None or not dev.gatt_paths:
            return
        try:
            self.gatt_notify(address, uuid, value)
        except KeyError:
            pass

    def _set(self, dev: Device, **props: Any) -> None:
        """Device1 properties; a new link id when it connects, the app told when it goes."""
        was = bool(self._device_state(dev).get("Connected"))
        if "Connected" in props and bool(props["Connected"]) != was:
            if props["Connected"]:
                dev.link = next(_LINKS)
                dev.link_gone = asyncio.Event()
                for app in _apps(dev):
                    if hasattr(app, "link_up"):
                        app.link_up(dev.link)
            else:
                dev.link_gone.set()
                for app in _apps(dev):
                    if hasattr(app, "link_down"):
                        app.link_down(dev.link)
        super()._set(dev, **props)
        if "Connected" in props and not props["Connected"] and was and dev.gatt_paths and (
                self.gatt_cache == "no" or (self.gatt_cache == "yes" and not dev.paired)):
            self._unexport_gatt(dev)  # gatt_cache_cleanup: gatt_db_clear

    async def le_connect(self, address: str) -> bool:
        """The phone makes an LE connection to the car (it is bonded or not): the car's bluetoothd
        discovers its GATT services (the objects appear, ServicesResolved=true).  No BR/EDR profile
        is involved.  False when the phone is out of range or the adapter is off."""
        dev = self._dev(address)
        if not (self.running and self._adapter_state["Powered"] and dev.phone.in_range):
            return False
        if self._device_state(dev).get("Blocked"):
            return False
        self._export_device(dev)
        gen = self._generation
        await asyncio.sleep(self.t.connect_delay)
        if gen != self._generation or not dev.phone.in_range:
            return False
        if dev.temp_timer:
            dev.temp_timer.cancel()
            dev.temp_timer = None
        self._set(dev, Connected=True)
        self._set(dev, UUIDs=self._uuids(dev))
        self._export_gatt(dev)
        self._set(dev, ServicesResolved=True)
        return True

    def _seen(self, dev: Device) -> None:
        """An inquiry result or an LE advertising report: the advertised service UUIDs join UUIDs."""
        super()._seen(dev)
        if _apps(dev) and self._exported(dev):
            self._set(dev, UUIDs=self._uuids(dev))

    def le_advertise(self, address: str) -> bool:
        """The car hears the phone's LE advertising (while it scans, or an advertisement monitor):
        a Device1 (temporary unless paired) with RSSI and the advertised service UUIDs."""
        dev = self._dev(address)
        if not (self.running and dev.phone.in_range and _apps(dev)):
            return False
        self._seen(dev)
        return True

    def _unexport_gatt(self, dev: Device) -> None:
        for path in reversed(dev.gatt_paths):
            self._gatt.pop(path, None)
            if path in self._objects and self._server is not None:
                self._server.remove(path)
        dev.gatt_paths = []

    def _set_obj(self, path: str, iface: str, **props: Any) -> None:
        obj = self._objects.get(path, {}).get(iface)
        if not isinstance(obj, DictInterface):
            return
        obj.update(**props)
        self._bump()

    def _gatt_char(self, obj: BluezIface) -> tuple[GattObj, GattCharacteristic]:
        g = self._gatt.get(obj.path)
        if g is None or g.char is None:
            raise BluezError("org.freedesktop.DBus.Error.UnknownObject", "no such characteristic")
        if not self._device_state(g.dev).get("Connected"):
            raise BluezError("Failed", "Not connected")
        return g, g.char

    def _m_GattCharacteristic1_ReadValue(self, msg: Message, obj: BluezIface) -> Message | Awaitable[list[Any]]:
        _g, ch = self._gatt_char(obj)
        (opts,) = msg.body
        if "read" not in ch.flags:
            raise BluezError("NotPermitted", "Read not permitted")
        offset = 0
        if "offset" in opts:
            if opts["offset"].signature != "q":
                raise BluezError("InvalidArguments", "Invalid arguments in method call")
            offset = opts["offset"].value
        if _g.app is not None:
            return self._app_io(msg, obj, _g, ch, lambda link, mtu: _g.app.read(link, ch.uuid.lower(), offset, mtu))
        if offset > len(ch.value):
            raise BluezError("InvalidArguments", "Invalid offset")
        self._set_obj(obj.path, GATT_CHAR, Value=bytes(ch.value))  # the cached Value follows a read
        return Message.new_method_return(msg, "ay", [bytes(ch.value[offset:])])

    def _m_GattCharacteristic1_WriteValue(self, msg: Message, obj: BluezIface) -> Message | Awaitable[list[Any]]:
        g, ch = self._gatt_char(obj)
        value, opts = msg.body
        kind = opts["type"].value if "type" in opts and opts["type"].signature == "s" else ""
        allowed = {"command": {"write-without-response"}, "request": {"write"}, "reliable": {"reliable-write"},
                   "": {"write", "write-without-response"}}.get(kind)
        if allowed is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        if not allowed & set(ch.flags):
            raise BluezError("NotPermitted", "Write not permitted")
        if g.app is not None:
            self.gatt_writes.append((g.dev.phone.address, ch.uuid, bytes(value)))
            return self._app_io(msg, obj, g, ch, lambda link, _mtu: g.app.write(link, ch.uuid.lower(), bytes(value)))
        ch.value = bytes(value)
        self.gatt_writes.append((g.dev.phone.address, ch.uuid, bytes(value)))
        self._bump()
        return Message.new_method_return(msg)

    async def _app_io(self, msg: Message, obj: BluezIface, g: GattObj, ch: GattCharacteristic,
                      op: Any) -> list[Any]:
        """One ATT request answered by the phone's app: its value, or an ATT error mapped as
        bluetoothd maps it.  When the link goes under the request, bluetoothd (5.66 and current)
        answers it *successfully*: bt_att's disconnect_cb completes the pending request as an
        error response without a PDU, so att_ecode is 0 and async_dbus_op_reply sends a normal
        reply — an empty value for ReadValue (chrc_read_cb), nothing for WriteValue
        (write_result_cb).  The fake does the same."""
        from ..companion import AttError, LinkLost

        dev = g.dev
        link, gone = dev.link, dev.link_gone
        mtu = int(getattr(dev.phone, "att_mtu", 517))
        lost = False
        if getattr(g.app, "requires_bond", False) and not dev.paired:
            # Encryption required and no key (simplified: bluetoothd would try to raise the
            # security level first, which starts pairing from the car's side).
            raise att_error(0x05)
        try:
            result = op(link, mtu)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                waiter = asyncio.ensure_future(gone.wait())
                try:
                    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if not task.done():
                    task.cancel()
                    lost = True  # the bearer went under the request
                else:
                    result = task.result()
        except AttError as exc:
            raise att_error(exc.code) from None
        except LinkLost:
            self._spawn(self._drop_link(dev, "Timeout", "Connection timed out"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), 5.0)
            lost = True
        if lost or gone.is_set() or dev.link != link:
            return [b""] if msg.member == "ReadValue" else []
        if msg.member == "ReadValue":
            value = bytes(result or b"")
            ch.value = value
            self._set_obj(obj.path, GATT_CHAR, Value=value)  # the cached Value follows a read
            return [value]
        self._bump()
        return []

    # -- descriptors (the CCCD of an app's notifying characteristic) ----------------------------------
    def _gatt_desc(self, obj: BluezIface) -> GattObj:
        g = self._gatt.get(obj.path)
        if g is None or not g.desc_uuid:
            raise BluezError("org.freedesktop.DBus.Error.UnknownObject", "no such descriptor")
        if not self._device_state(g.dev).get("Connected"):
            raise BluezError("Failed", "Not connected")
        return g

    def _m_GattDescriptor1_ReadValue(self, msg: Message, obj: BluezIface) -> Message:
        g = self._gatt_desc(obj)
        parent = self._gatt.get(g.parent)
        on = bool(parent and parent.sessions)
        value = b"\x01\x00" if on else b"\x00\x00"
        self._set_obj(obj.path, GATT_DESC, Value=value)
        return Message.new_method_return(msg, "ay", [value])

    def _m_GattDescriptor1_WriteValue(self, msg: Message, obj: BluezIface) -> Message:
        self._gatt_desc(obj)
        # src/gatt-client.c descriptor_write_value: CCCDs only through StartNotify/StopNotify.
        raise BluezError("NotPermitted", "Write not permitted")

    def _m_GattCharacteristic1_StartNotify(self, msg: Message, obj: BluezIface) -> Message:
        g, ch = self._gatt_char(obj)
        if not {"notify", "indicate"} & set(ch.flags):
            raise BluezError("NotSupported", "Operation is not supported")
        sender = msg.sender or ""
        if sender in g.sessions:
            raise BluezError("InProgress", "In Progress")
        g.sessions.add(sender)
        self._set_obj(obj.path, GATT_CHAR, Notifying=True)
        return Message.new_method_return(msg)

    def _m_GattCharacteristic1_StopNotify(self, msg: Message, obj: BluezIface) -> Message:
        g = self._gatt.get(obj.path)
        sender = msg.sender or ""
        if g is None or sender not in g.sessions:
            raise BluezError("Failed", "No notify session started")
        g.sessions.discard(sender)
        if not g.sessions:
            self._set_obj(obj.path, GATT_CHAR, Notifying=False)
        return Message.new_method_return(msg)

    def gatt_notify(self, address: str, uuid: str, value: bytes) -> bool:
        """The phone notifies a characteristic: one ``PropertiesChanged(Value)`` per notification,
        sent at once (not batched, like src/gatt-client.c).  False when nobody subscribed."""
        dev = self._dev(address)
        for path in dev.gatt_paths:
            g = self._gatt.get(path)
            if g is None or g.char is None or g.char.uuid.lower() != uuid.lower():
                continue
            g.char.value = bytes(value)
            if not g.sessions or not self._device_state(dev).get("Connected"):
                return False
            char = self._objects[path][GATT_CHAR]
            assert isinstance(char, DictInterface)
            char.values["Value"] = bytes(value)
            self._send_signal(path, PROPS_IFACE, "PropertiesChanged", "sa{sv}as",
                              [GATT_CHAR, {"Value": Variant("ay", bytes(value))}, []])
            return True
        raise KeyError(f"{address} has no characteristic {uuid}")

