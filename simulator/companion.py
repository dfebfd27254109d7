"""The phone side of the companion GATT service (docs/ble-companion.md) and the interface the fake
BlueZ serves any phone GATT application through.

The interface: :class:`GattApp`
-------------------------------
A phone app that serves one GATT service to the car.  The fake BlueZ (``simulator/bluez/gatt.py``)
exports its service and characteristics as ``org.bluez.GattService1``/``GattCharacteristic1``
objects (with a CCCD ``GattDescriptor1`` under every notifying characteristic) when the phone's
services are resolved, and turns the car's D-Bus calls into calls on the app:

``service_uuid``
    the primary service's 128-bit UUID, lower case.
``characteristics()``
    ``[(uuid, flags), ...]`` in handle order; flags as BlueZ spells them (``read``, ``write``,
    ``write-without-response``, ``notify``, ``indicate``).  Read when the objects are exported.
``read(link, uuid, offset)``
    the value for a ``ReadValue`` (``offset`` from its options, 0 by default).  ``link`` is the
    car's connection: an integer that changes on every (re)connection of the car to this phone, so
    the app can keep per-connection state (e.g. the selected chunk).  ``mtu`` is the link's ATT MTU
    (:meth:`GattApp.read`'s ``mtu`` argument).  May raise :class:`AttError`; may be a coroutine
    function's result (``await``-able) to stall or delay the answer.
``write(link, uuid, value)``
    a ``WriteValue`` (request or command, as the flags allow).  May raise :class:`AttError`;
    may return an awaitable, which the fake awaits before it answers the write.
``attach(notify)``
    the fake gives the app its way to notify: ``notify(uuid, value)`` sends ``value`` as a
    notification of that characteristic to subscribed clients (``PropertiesChanged(Value)``) while
    the car is connected, and is a no-op otherwise.  Called when the app's phone joins a fake BlueZ
    (again after a restart).
``link_up(link)`` / ``link_down(link)``
    the car connected (new link id) / the link went; optional (the fake calls them when present).

``read``/``write`` may also raise :class:`LinkLost`: the phone drops the link under the request
(walks out of range); the fake fails the call as BlueZ does when the ATT bearer goes
(``org.bluez.Error.Failed``) and disconnects the device.

:class:`AttError` carries an ATT error code (Bluetooth Core Vol 3 Part F §3.4.1.1); the fake maps it
to a D-Bus error like BlueZ 5.66's ``create_gatt_dbus_error`` (src/gatt-client.c).

:class:`CompanionApp` is the built-in implementation of docs/ble-companion.md (protocol 1.0).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

# ATT error codes (Bluetooth Core Vol 3 Part F §3.4.1.1)
ATT_INVALID_HANDLE = 0x01
ATT_READ_NOT_PERMITTED = 0x02
ATT_WRITE_NOT_PERMITTED = 0x03
ATT_INVALID_PDU = 0x04
ATT_INSUFFICIENT_AUTHENTICATION = 0x05
ATT_REQUEST_NOT_SUPPORTED = 0x06
ATT_INVALID_OFFSET = 0x07
ATT_INSUFFICIENT_AUTHORIZATION = 0x08
ATT_ATTRIBUTE_NOT_LONG = 0x0B
ATT_INSUFFICIENT_ENCRYPTION_KEY_SIZE = 0x0C
ATT_INVALID_ATTRIBUTE_VALUE_LEN = 0x0D
ATT_UNLIKELY = 0x0E
ATT_INSUFFICIENT_ENCRYPTION = 0x0F
ATT_UNSUPPORTED_GROUP_TYPE = 0x10
ATT_INSUFFICIENT_RESOURCES = 0x11

Notify = Callable[[str, bytes], None]


class AttError(Exception):
    """An ATT error response from the phone (``code``: the ATT error code)."""

    def __init__(self, code: int, text: str = "") -> None:
        super().__init__(text or f"ATT error 0x{code:02x}")
        self.code = code


class LinkLost(Exception):
    """Raised by an app's read/write: the phone drops the link under this request."""


@runtime_checkable
class GattApp(Protocol):
    """A phone app serving one primary GATT service (see the module docstring)."""

    service_uuid: str

    def characteristics(self) -> list[tuple[str, tuple[str, ...]]]: ...

    def read(self, link: int, uuid: str, offset: int, mtu: int) -> bytes | Awaitable[bytes]: ...

    def write(self, link: int, uuid: str, value: bytes) -> Awaitable[None] | None: ...

    def attach(self, notify: Notify) -> None: ...
