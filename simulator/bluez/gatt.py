"""GATT (what bleak uses; reference §1.7, §6.2, §7 item 9): service/characteristic objects,
ReadValue/WriteValue/StartNotify/StopNotify and notifications."""

from typing import Any

from dbus_fast import Message, Variant

from ..fakebus import DictInterface
from .core import BluezCore, BluezIface
from .model import (
    GATT_CHAR,
    GATT_SERVICE,
    PROPS_IFACE,
    BluezError,
    Device,
    GattCharacteristic,
    GattObj,
)


class GattPart(BluezCore):
    # -- GATT (what bleak uses; reference §1.7, §6.2, §7 item 9) --------------------------------------
    def _export_gatt(self, dev: Device) -> None:
        """Service/characteristic objects (paths with 4 lower-case hex digits of the handle)."""
        if not dev.phone.gatt or dev.gatt_paths or not self._exported(dev):
            return
        server = self._server
        assert server is not None
        handle = 0x000A
        for svc in dev.phone.gatt:
            spath = f"{dev.path}/service{handle:04x}"
            self._gatt[spath] = GattObj(dev, None)
            dev.gatt_paths.append(spath)
            server.add(spath, self._iface(GATT_SERVICE, spath, {
                "UUID": svc.uuid.lower(), "Primary": svc.primary, "Device": dev.path, "Includes": [],
                "Handle": handle}))
            handle += 1
            for ch in svc.characteristics:
                cpath = f"{spath}/char{handle:04x}"
                notifies = bool({"notify", "indicate"} & set(ch.flags))
                self._gatt[cpath] = GattObj(dev, ch)
                dev.gatt_paths.append(cpath)
                server.add(cpath, self._iface(GATT_CHAR, cpath, {
                    "UUID": ch.uuid.lower(), "Service": spath, "Value": b"",
                    "Notifying": False if notifies else None, "Flags": list(ch.flags), "Handle": handle,
                    "MTU": 517}))
                handle += 2  # declaration + value
            handle += 1

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

    def _m_GattCharacteristic1_ReadValue(self, msg: Message, obj: BluezIface) -> Message:
        _g, ch = self._gatt_char(obj)
        (opts,) = msg.body
        if "read" not in ch.flags:
            raise BluezError("NotPermitted", "Read not permitted")
        offset = 0
        if "offset" in opts:
            if opts["offset"].signature != "q":
                raise BluezError("InvalidArguments", "Invalid arguments in method call")
            offset = opts["offset"].value
        if offset > len(ch.value):
            raise BluezError("InvalidArguments", "Invalid offset")
        self._set_obj(obj.path, GATT_CHAR, Value=bytes(ch.value))  # the cached Value follows a read
        return Message.new_method_return(msg, "ay", [bytes(ch.value[offset:])])

    def _m_GattCharacteristic1_WriteValue(self, msg: Message, obj: BluezIface) -> Message:
        g, ch = self._gatt_char(obj)
        value, opts = msg.body
        kind = opts["type"].value if "type" in opts and opts["type"].signature == "s" else ""
        allowed = {"command": {"write-without-response"}, "request": {"write"}, "reliable": {"reliable-write"},
                   "": {"write", "write-without-response"}}.get(kind)
        if allowed is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        if not allowed & set(ch.flags):
            raise BluezError("NotPermitted", "Write not permitted")
        ch.value = bytes(value)
        self.gatt_writes.append((g.dev.phone.address, ch.uuid, bytes(value)))
        self._bump()
        return Message.new_method_return(msg)

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

