"""``dashbridgectl monitor``: follow every signal the daemon emits until Ctrl-C.

Each line starts with the local time (milliseconds); ``--json`` lines carry ``time`` (epoch
seconds).  When ``org.dashbridge`` leaves the bus or comes back (a daemon restart), a line says
so; when the bus itself goes away, monitor says so and exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from dbus_fast import Message, MessageType

from ..dbus import names
from ..dbus.call import call, unwrap
from . import CtlContext


def register(sub: Any) -> None:
    p = sub.add_parser("monitor", help="print every signal from the daemon as it happens")
    p.add_argument("--count", type=int, default=0, help="exit after this many signals (0: never)")
    p.set_defaults(func=monitor)


def _stamp(now: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


async def monitor(ctx: CtlContext, args: argparse.Namespace) -> int:
    done = asyncio.Event()
    seen = 0

    def emit(now: float, record: dict[str, Any], human: str) -> None:
        if ctx.json:
            print(json.dumps({"time": round(now, 3), **record}, default=str))
        else:
            print(f"{_stamp(now)} {human}")
        sys.stdout.flush()

    def on(msg: Message) -> None:
        nonlocal seen
        if msg.message_type != MessageType.SIGNAL or done.is_set():
            return
        now = time.time()
        if msg.member == "NameOwnerChanged" and msg.sender == names.DBUS_NAME:
            name, _old, new = msg.body
            if name == names.DASHBRIDGE_NAME:
                if new:
                    emit(now, {"owner": new}, f"org.dashbridge is on the bus ({new})")
                else:
                    emit(now, {"owner": None}, "org.dashbridge left the bus (the daemon stopped)")
            return
        ours = (msg.interface or "").startswith("org.dashbridge")
        props = msg.member == "PropertiesChanged" and bool(msg.body) and str(msg.body[0]).startswith("org.dashbridge")
        if not (ours or props):
            return
        body = unwrap(list(msg.body))
        iface = (msg.interface or "").removeprefix("org.dashbridge.")
        emit(now, {"interface": msg.interface, "member": msg.member, "args": body},
             f"{iface}.{msg.member} " + " ".join(_fmt(a) for a in body))
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    ctx.bus.add_message_handler(on)
    for rule in (f"type='signal',sender='{names.DASHBRIDGE_NAME}'",
                 f"type='signal',sender='{names.DBUS_NAME}',member='NameOwnerChanged',arg0='{names.DASHBRIDGE_NAME}'"):
        await call(ctx.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s", [rule],
                   timeout=ctx.timeout)
    print("monitoring org.dashbridge (Ctrl-C to stop)", file=sys.stderr, flush=True)
    finished = asyncio.ensure_future(done.wait())
    gone = asyncio.ensure_future(_disconnected(ctx))
    try:
        await asyncio.wait([finished, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        finished.cancel()
    if gone.done() and not done.is_set():
        print("dashbridgectl: the bus went away; monitor stops", file=sys.stderr, flush=True)
        return 1
    gone.cancel()
    return 0


async def _disconnected(ctx: CtlContext) -> None:
    try:
        await ctx.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
    except Exception:  # the bus went away, whatever the reason
        pass


def _fmt(v: Any) -> str:
    return json.dumps(v, default=str, ensure_ascii=False)
