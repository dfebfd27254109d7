"""The pairing agent (``org.bluez.Agent1``) the daemon exports on its system-bus connection.

bluetoothd calls it; it turns every request into a dashboard prompt (through :class:`AgentHandler`)
and answers within a deadline.  Requests are accepted only from the current owner of ``org.bluez``
(:class:`AgentGate`, a message filter in front of dbus-fast's dispatch, like ``api/auth.py``);
anyone else gets ``org.bluez.Error.Rejected`` and a log line.  Any failure inside the handler is a
rejection, never a traceback to the caller (reference §1.3: any error reply means "no").

This module defines no ``from __future__ import annotations``: dbus-fast reads the ``Annotated``
hints at class creation.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from dbus_fast import DBusError, Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusStr, DBusUInt16, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method

from ..dbus import names

log = logging.getLogger(__name__)

AGENT_PATH = names.DASHBRIDGE_AGENT_PATH
T = TypeVar("T")


class AgentRejected(Exception):
    """Answer the request with ``org.bluez.Error.Rejected``."""


class AgentHandler(Protocol):
    async def request_confirmation(self, device: str, passkey: int) -> None: ...
    async def request_authorization(self, device: str) -> None: ...
    async def request_pin_code(self, device: str) -> str: ...
    async def request_passkey(self, device: str) -> int: ...
    def display_passkey(self, device: str, passkey: int, entered: int) -> None: ...
    def display_pin_code(self, device: str, pincode: str) -> None: ...
    async def authorize_service(self, device: str, uuid: str) -> None: ...
    def cancel(self) -> None: ...
    def release(self) -> None: ...


def _rejected(text: str) -> DBusError:
    return DBusError(names.BLUEZ_ERR_REJECTED, text)


async def _guard(member: str, work: Awaitable[T]) -> T:
    try:
        return await work
    except AgentRejected as exc:
        raise _rejected(str(exc) or "rejected") from None
    except DBusError:
        raise
    except Exception:
        log.exception("agent %s failed; rejecting", member)
        raise _rejected("internal error") from None


class PairingAgent(ServiceInterface):
    def __init__(self, handler: AgentHandler) -> None:
        super().__init__(names.BLUEZ_AGENT_IFACE)
        self.handler = handler

    @dbus_method()
    def Release(self) -> None:
        self.handler.release()

    @dbus_method()
    async def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:
        return await _guard("RequestPinCode", self.handler.request_pin_code(device))

    @dbus_method()
    def DisplayPinCode(self, device: DBusObjectPath, pincode: DBusStr) -> None:
        try:
            self.handler.display_pin_code(device, pincode)
        except AgentRejected as exc:
            raise _rejected(str(exc)) from None

    @dbus_method()
    async def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:
        return await _guard("RequestPasskey", self.handler.request_passkey(device))

    @dbus_method()
    def DisplayPasskey(self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16) -> None:
        self.handler.display_passkey(device, passkey, entered)

    @dbus_method()
    async def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> None:
        await _guard("RequestConfirmation", self.handler.request_confirmation(device, passkey))

    @dbus_method()
    async def RequestAuthorization(self, device: DBusObjectPath) -> None:
        await _guard("RequestAuthorization", self.handler.request_authorization(device))

    @dbus_method()
    async def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> None:
        await _guard("AuthorizeService", self.handler.authorize_service(device, uuid))

    @dbus_method()
    def Cancel(self) -> None:
        self.handler.cancel()


class AgentGate:
    """Rejects agent calls that do not come from the current ``org.bluez`` owner."""

    def __init__(self, bus: MessageBus, owner: Callable[[], str | None], path: str = AGENT_PATH) -> None:
        self.bus = bus
        self.owner = owner
        self.path = path
        self._warned: set[str] = set()
        self.refused = 0

    def install(self) -> None:
        self.bus.add_message_handler(self._on_message)

    def remove(self) -> None:
        self.bus.remove_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> Message | bool | None:
        if msg.message_type != MessageType.METHOD_CALL or msg.path != self.path:
            return None
        if msg.interface not in (names.BLUEZ_AGENT_IFACE, None):
            return None
        owner = self.owner()
        if owner is not None and msg.sender == owner:
            return None
        self.refused += 1
        if msg.sender not in self._warned:
            if len(self._warned) > 256:
                self._warned.clear()
            self._warned.add(msg.sender or "")
            log.warning("agent %s from %s refused: only bluetoothd (%s) may call the agent", msg.member,
                        msg.sender, owner or "not running")
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True  # handled: it must not reach the agent, and nobody waits for an answer
        return Message.new_error(msg, names.BLUEZ_ERR_REJECTED, "agent requests are accepted from bluetoothd only")
