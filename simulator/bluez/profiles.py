"""``ProfileManager1`` and profile connections: ``RegisterProfile`` rules, ``Profile1.NewConnection``
with one end of a socketpair, ``RequestDisconnection``, incoming connections with ``AuthorizeService``."""

import asyncio
import socket
from typing import Any, ClassVar

from dbus_fast import Message, MessageType, Variant

from .core import BluezCore, BluezIface, log
from .model import (
    BUILTIN_PROFILES,
    LOCAL_TO_REMOTE,
    NO_AUTHORIZATION,
    PROFILE,
    BluezError,
    Device,
    Profile,
    parse_uuid,
)


class ProfilesPart(BluezCore):
    _OPTION_SIGS: ClassVar[dict[str, str]] = {"Name": "s", "Service": "s", "Role": "s", "Channel": "q", "PSM": "q",
                    "RequireAuthentication": "b", "RequireAuthorization": "b", "AutoConnect": "b",
                    "ServiceRecord": "s", "Version": "q", "Features": "q"}

    def _m_ProfileManager1_RegisterProfile(self, msg: Message, obj: BluezIface) -> Message:
        path, uuid_text, options = msg.body
        uuid = parse_uuid(uuid_text)
        if uuid is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        opts: dict[str, Any] = {}
        for k, v in options.items():
            want = self._OPTION_SIGS.get(k)
            if want is None:
                continue  # unknown keys are ignored
            if v.signature != want:
                raise BluezError("InvalidArguments", "Invalid arguments in method call")
            opts[k] = v.value
        if opts.get("Role") not in (None, "client", "server"):
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        sender = msg.sender or ""
        if any(p.sender == sender and p.path == path for p in self._profiles):
            raise BluezError("AlreadyExists", "Already Exists")
        if any(p.uuid == uuid for p in self._profiles):
            raise BluezError("NotPermitted", "UUID already registered")
        self._profiles.append(Profile(sender, path, uuid, opts))
        self._bump()
        return Message.new_method_return(msg)

    def _m_ProfileManager1_UnregisterProfile(self, msg: Message, obj: BluezIface) -> Message:
        (path,) = msg.body
        sender = msg.sender or ""
        for p in self._profiles:
            if p.sender == sender and p.path == path:
                self._profiles.remove(p)
                self._bump()
                return Message.new_method_return(msg)
        raise BluezError("DoesNotExist", "Does Not Exist")


    def _connectable_local_profiles(self, dev: Device, *, builtin_only: bool = False) -> list[str]:
        offered = set(dev.phone.uuids)
        local = list(BUILTIN_PROFILES) + ([] if builtin_only else [p.uuid for p in self._profiles])
        return [u for u in dict.fromkeys(local) if LOCAL_TO_REMOTE.get(u) in offered]


    async def _connect_profile(self, dev: Device, uuid: str) -> bool:
        prof = next((p for p in self._profiles if p.uuid == uuid), None)
        if prof is None:
            ok = uuid in BUILTIN_PROFILES
        else:
            ok = await self._new_connection(dev, prof)
        if ok:
            self._notify_profiles(dev, {uuid}, connected=True)
        return ok

    async def _new_connection(self, dev: Device, prof: Profile) -> bool:
        car_end, phone_end = socket.socketpair()
        props = {"Version": Variant("q", 0x0107), "Features": Variant("q", 0)}
        try:
            reply = await self._call(prof.sender, prof.path, PROFILE, "NewConnection", "oha{sv}",
                                     [dev.path, 0, props], self.t.profile_timeout, unix_fds=[car_end.fileno()])
        finally:
            car_end.close()  # the registrant got its own duplicate
        if reply is None or reply.message_type == MessageType.ERROR:
            phone_end.close()
            return False
        old = self._profile_socks.pop((dev.phone.address, prof.uuid), None)
        if old:
            old.close()
        self._profile_socks[(dev.phone.address, prof.uuid)] = phone_end
        return True

    def _notify_profiles(self, dev: Device, uuids: set[str], *, connected: bool) -> None:
        for uuid in uuids:
            if not connected:
                prof = next((p for p in self._profiles if p.uuid == uuid), None)
                if prof is not None:
                    self._send_noreply(prof.sender, prof.path, PROFILE, "RequestDisconnection", "o", [dev.path])
                sock = self._profile_socks.pop((dev.phone.address, uuid), None)
                if sock:
                    sock.close()
            for cb in list(self._profile_listeners):
                try:
                    cb(dev.phone.address, uuid, connected)
                except Exception:
                    log.exception("profile listener failed")


    async def _incoming_profiles(self, dev: Device) -> None:
        await asyncio.sleep(self.t.profile_delay)
        for uuid in self._connectable_local_profiles(dev):
            if uuid in dev.profiles or not self._device_state(dev).get("Connected"):
                continue
            prof = next((p for p in self._profiles if p.uuid == uuid), None)
            needs_auth = prof.require_authorization if prof else uuid not in NO_AUTHORIZATION
            if needs_auth and not self._device_state(dev).get("Trusted"):
                agent = self._default()
                if agent is None:
                    continue  # no default agent: rejected
                ok, _ = await self._agent_request(agent, "AuthorizeService", "os", [dev.path, uuid], dev)
                if not ok:
                    continue
            if await self._connect_profile(dev, uuid):
                dev.profiles.add(uuid)

