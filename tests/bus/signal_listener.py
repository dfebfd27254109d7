"""A bus client run as another Unix user (``setpriv``) by the signal-leak test: it asks for every
signal it can get — a plain match rule for org.dashbridge's signals, and an eavesdropping rule for
everything — prints ``ready``, records what arrives until its stdin closes, then makes one round
trip to the bus (so every signal routed before that has arrived) and prints one JSON list of
``[sender, interface, member, repr(body)]``.  Standard library and dbus-fast only."""

from __future__ import annotations

import asyncio
import json
import sys

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

BUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


async def bus_call(bus: MessageBus, member: str, sig: str = "", body: list[object] | None = None) -> Message:
    reply = await asyncio.wait_for(bus.call(Message(destination=BUS[0], path=BUS[1], interface=BUS[2],
                                                    member=member, signature=sig, body=body or [])), 10)
    assert reply is not None
    return reply


async def main() -> None:
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    seen: list[list[str]] = []

    def on(msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.sender != BUS[0]:
            seen.append([str(msg.sender), str(msg.interface), str(msg.member), repr(msg.body)])

    bus.add_message_handler(on)
    for rule in ("type='signal',sender='org.dashbridge'", "type='signal'", "eavesdrop='true'",
                 "type='signal',eavesdrop='true'"):
        await bus_call(bus, "AddMatch", "s", [rule])  # an eavesdrop rule may be refused: the reply says
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await bus_call(bus, "GetId")
    bus.disconnect()
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
