"""A typed ``call()`` with a deadline on every call, and variant helpers.

dbus-fast's ``MessageBus.call()`` waits forever (reference §8 item 18): every call here has a
deadline, and every D-Bus error comes back as one of the typed errors of ``errors.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from . import names
from .errors import BusError, CallTimeout, ServiceGone, map_error

DEFAULT_TIMEOUT_S = 5.0


async def call(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: Sequence[Any] = (),
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Any]:
    """Call ``interface.member`` on ``destination`` at ``path``; returns the reply body.

    Raises :class:`CallTimeout` after ``timeout`` seconds, :class:`ServiceGone` when the
    destination is not on the bus or our connection is gone, or another :class:`BusError`.
    """
    msg = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=list(body),
    )
    if not bus.connected:
        raise ServiceGone(names.ERR_DISCONNECTED, "our bus connection is closed", member=member)
    try:
        async with asyncio.timeout(timeout):
            reply = await bus.call(msg)
    except TimeoutError:
        raise CallTimeout(names.ERR_TIMEOUT, f"no reply within {timeout:g}s", member=member) from None
    except (EOFError, ConnectionError) as exc:
        raise ServiceGone(names.ERR_DISCONNECTED, str(exc), member=member) from exc
    if reply is None:
        raise ServiceGone(names.ERR_DISCONNECTED, "no reply (bus closed)", member=member)
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise map_error(reply.error_name or "", text, member)
    return list(reply.body)


async def get_property(
    bus: MessageBus, destination: str, path: str, interface: str, prop: str, *, timeout: float = DEFAULT_TIMEOUT_S
) -> Any:
    body = await call(
        bus, destination, path, names.PROPERTIES_IFACE, "Get", "ss", [interface, prop], timeout=timeout
    )
    return unwrap(body[0])


async def set_property(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    prop: str,
    value: Variant,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> None:
    await call(
        bus,
        destination,
        path,
        names.PROPERTIES_IFACE,
        "Set",
        "ssv",
        [interface, prop, value],
        timeout=timeout,
    )


def unwrap(value: Any) -> Any:
    """Strip ``Variant`` wrappers recursively (dicts, lists, tuples)."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, tuple):  # dbus-fast 5 returns structs such as (oa{sv}) as tuples
        return tuple(unwrap(v) for v in value)
    return value


def unwrap_props(props: Mapping[str, Any]) -> dict[str, Any]:
    return {k: unwrap(v) for k, v in props.items()}


__all__ = ["DEFAULT_TIMEOUT_S", "BusError", "call", "get_property", "set_property", "unwrap", "unwrap_props"]
