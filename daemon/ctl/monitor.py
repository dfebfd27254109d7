"""``dashbridgectl monitor``: follow every signal the daemon emits until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from dbus_fast import Message, MessageType

from ..dbus import names
from ..dbus.call import call, unwrap
from . import CtlContext


def register(sub: Any) -> None:
    p = sub.add_parser("monitor", help="print every signal from the daemon as it happens")
    p.add_argument("--count", type=int, default=0, help="exit after this many signals (0: never)")
    p.set_defaults(func=monitor)


async def monitor(ctx: CtlContext, args: argparse.Namespace) -> int:
    done = asyncio.Event()
    seen = 0

    def on(msg: Message) -> None:
        nonlocal seen
        if msg.message_type != MessageType.SIGNAL or done.is_set():
            return
        ours = (msg.interface or "").startswith("org.dashbridge")
        props = msg.member == "PropertiesChanged" and bool(msg.body) and str(msg.body[0]).startswith("org.dashbridge")
        if not (ours or props):
            return
        body = unwrap(list(msg.body))
        if ctx.json:
            print(json.dumps({"interface": msg.interface, "member": msg.member, "args": body}, default=str))
        else:
            iface = (msg.interface or "").removeprefix("org.dashbridge.")
            print(f"{iface}.{msg.member} " + " ".join(_fmt(a) for a in body))
        sys.stdout.flush()
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    ctx.bus.add_message_handler(on)
    await call(ctx.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
               [f"type='signal',sender='{names.DASHBRIDGE_NAME}'"])
    print("monitoring org.dashbridge (Ctrl-C to stop)", file=sys.stderr)
    await done.wait()
    return 0


def _fmt(v: Any) -> str:
    return json.dumps(v, default=str, ensure_ascii=False)
