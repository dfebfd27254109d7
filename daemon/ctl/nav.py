"""``dashbridgectl nav ...``: destinations offered to the driver; accept, dismiss, inspect.

A client of ``org.dashbridge.Navigation1`` only.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..dbus import names
from ..dbus.call import unwrap
from . import CtlContext

IFACE = names.DASHBRIDGE_NAVIGATION_IFACE


def register(sub: Any) -> None:
    p = sub.add_parser("nav", help="destinations from messages and the cloud; accept or dismiss them")
    nsub = p.add_subparsers(dest="nav_command", metavar="ACTION")
    p.set_defaults(func=_pending)
    nsub.add_parser("pending", help="offered and queued destinations").set_defaults(func=_pending)
    for name, helptext in (("accept", "send it to the navigation"), ("dismiss", "drop it"),
                           ("show", "one destination in any state")):
        sp = nsub.add_parser(name, help=helptext)
        sp.add_argument("id")
        sp.set_defaults(func={"accept": _accept, "dismiss": _dismiss, "show": _show}[name])


def _where(i: dict[str, Any]) -> str:
    if "latitude" in i:
        return f"{i['label']} ({i['latitude']:.5f}, {i['longitude']:.5f})"
    if i["kind"] == "link":
        return f"{i['label']} <{i['url']}>"
    return i["query"] if i["query"] == i["label"] else f"{i['label']}: {i['query']}"


def _line(i: dict[str, Any]) -> str:
    src = f"from {i['source']} {i['source_ref']}".rstrip()
    return f"{i['id']}  {i['state']:<9} {i['kind']:<11}  {_where(i)}  {src}  (confidence {i['confidence']:.2f})"


async def _pending(ctx: CtlContext, args: argparse.Namespace) -> int:
    (raw,) = await ctx.call(IFACE, "Pending")
    items = [unwrap(i) for i in raw]
    ctx.out(items, lambda: "\n".join(_line(i) for i in items) if items else "nothing pending")
    return 0


async def _show(ctx: CtlContext, args: argparse.Namespace) -> int:
    (raw,) = await ctx.call(IFACE, "GetIntent", "s", [args.id])
    i = unwrap(raw)
    ctx.out(i, lambda: _line(i))
    return 0


async def _accept(ctx: CtlContext, args: argparse.Namespace) -> int:
    (state,) = await ctx.call(IFACE, "Accept", "s", [args.id])
    ctx.out({"id": args.id, "state": state}, f"{args.id}: {state}")
    return 0


async def _dismiss(ctx: CtlContext, args: argparse.Namespace) -> int:
    await ctx.call(IFACE, "Dismiss", "s", [args.id])
    ctx.out({"id": args.id, "state": "dismissed"}, f"{args.id}: dismissed")
    return 0
