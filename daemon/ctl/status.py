"""``dashbridgectl status``: is the daemon up, and how is each component."""

from __future__ import annotations

import argparse
from typing import Any

from ..dbus import names
from . import CtlContext


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="daemon version and health of each component")
    p.set_defaults(func=status)


async def status(ctx: CtlContext, args: argparse.Namespace) -> int:
    props = await ctx.props(names.DASHBRIDGE_DAEMON_IFACE)
    health = {k: {"state": v[0], "reason": v[1]} for k, v in props["Health"].items()}

    def human() -> str:
        lines = [f"dashbridge {props['Version']}: {props['Status']}"]
        for k, v in sorted(health.items()):
            lines.append(f"  {k:<12} {v['state']:<9} {v['reason']}")
        return "\n".join(lines)

    ctx.out({"version": props["Version"], "status": props["Status"], "health": health}, human)
    return 0 if all(v["state"] == "ok" for v in health.values()) else 3
