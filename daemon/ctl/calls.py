"""``dashbridgectl calls | dial | answer | hangup | hold | resume | swap | tones`` — org.dashbridge.Calls1."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..dbus import names
from . import CtlContext

IFACE = names.DASHBRIDGE_CALLS_IFACE


def register(sub: Any) -> None:
    p = sub.add_parser("calls", help="calls in progress and each phone's status")
    p.set_defaults(func=show)

    p = sub.add_parser("dial", help="dial a number")
    p.add_argument("number", help='digits, * and #, optional leading +; spaces and dashes are fine ("+44 20 ...")')
    p.add_argument("--phone", default="", help="Bluetooth address of the phone (default: the primary phone)")
    p.set_defaults(func=dial)

    p = sub.add_parser("answer", help="answer a ringing (or waiting) call")
    p.add_argument("call", nargs="?", default="", help="call id (default: the only ringing call)")
    p.set_defaults(func=answer)

    p = sub.add_parser("hangup", help="end or reject a call")
    p.add_argument("call", nargs="?", default="", help="call id (default: the only call)")
    p.add_argument("--all", action="store_true", help="every call (but a waiting one)")
    p.add_argument("--phone", default="", help="with --all: only this phone")
    p.set_defaults(func=hangup)

    p = sub.add_parser("hold", help="put an active call on hold")
    p.add_argument("call", nargs="?", default="", help="call id (default: the active call)")
    p.set_defaults(func=hold)

    p = sub.add_parser("resume", help="take a held call off hold")
    p.add_argument("call", nargs="?", default="", help="call id (default: the held call)")
    p.set_defaults(func=resume)

    p = sub.add_parser("swap", help="swap the active and the held call")
    p.add_argument("--phone", default="", help="Bluetooth address of the phone (default: the primary phone)")
    p.set_defaults(func=swap)

    p = sub.add_parser("tones", help="send DTMF tones on a call")
    p.add_argument("call", help="call id")
    p.add_argument("tones", help="0-9 * # A-D, p = pause")
    p.set_defaults(func=tones)


async def _calls(ctx: CtlContext) -> list[dict[str, Any]]:
    (calls,) = await ctx.call(IFACE, "GetCalls")
    from ..dbus.call import unwrap

    return [dict(unwrap(c)) for c in calls]


async def _pick(ctx: CtlContext, given: str, states: tuple[str, ...], what: str) -> str:
    """The call the user meant: the id given, else the only call in one of ``states``."""
    if given:
        return given
    cands = [c for c in await _calls(ctx) if c["State"] in states]
    if len(cands) == 1:
        return str(cands[0]["Id"])
    raise SystemExit(f"dashbridgectl: {'no' if not cands else 'more than one'} {what}; give a call id "
                     f"(see: dashbridgectl calls)")


def _fmt_call(c: dict[str, Any]) -> str:
    since = ""
    if c.get("StartTime"):
        secs = max(0, int(time.time()) - int(c["StartTime"]))
        since = f" {secs // 60}:{secs % 60:02d}"
    name = c["Name"] if c["Name"] != c["Number"] else ""
    who = f"{name} <{c['Number']}>" if name else (c["Number"] or "unknown caller")
    reason = f" ({c['DisconnectReason']})" if c.get("DisconnectReason") else ""
    arrow = {"incoming": "<-", "outgoing": "->"}.get(c["Direction"], "--")
    return f"  {c['Id']:<8} {c['State']:<9} {arrow} {who}{since}  [{c['Phone']}]{reason}"


def _fmt_phone(p: dict[str, Any]) -> str:
    bits = [p["Role"], "ready" if p["Ready"] else "hands-free link down"]
    if p["Operator"]:
        bits.append(p["Operator"] + (" (roaming)" if p["Registration"] == "roaming" else ""))
    if p["Signal"] >= 0:
        bits.append(f"signal {p['Signal']}%")
    if p["Battery"] >= 0:
        bits.append(f"battery {p['Battery']}%")
    return f"  {p['Address']}  {p['Name']}: " + ", ".join(bits)


async def show(ctx: CtlContext, args: argparse.Namespace) -> int:
    from ..dbus.call import unwrap

    calls = await _calls(ctx)
    (phones,) = await ctx.call(IFACE, "GetPhones")
    phones = [dict(unwrap(p)) for p in phones]

    def human() -> str:
        lines = ["phones:" if phones else "no phone connected"]
        lines += [_fmt_phone(p) for p in phones]
        lines.append("calls:" if calls else "no calls")
        lines += [_fmt_call(c) for c in calls]
        return "\n".join(lines)

    ctx.out({"phones": phones, "calls": calls}, human)
    return 0


async def dial(ctx: CtlContext, args: argparse.Namespace) -> int:
    (cid,) = await ctx.call(IFACE, "Dial", "ss", [args.number, args.phone])
    ctx.out({"call": cid}, f"dialling: {cid}")
    return 0


async def answer(ctx: CtlContext, args: argparse.Namespace) -> int:
    cid = await _pick(ctx, args.call, ("incoming", "waiting"), "ringing call")
    await ctx.call(IFACE, "Answer", "s", [cid])
    ctx.out({"call": cid}, f"answered {cid}")
    return 0


async def hangup(ctx: CtlContext, args: argparse.Namespace) -> int:
    if args.all:
        (n,) = await ctx.call(IFACE, "HangupAll", "s", [args.phone])
        ctx.out({"phones": n}, f"hung up all calls on {n} phone(s)")
        return 0
    cid = await _pick(ctx, args.call, ("incoming", "waiting", "dialing", "alerting", "active", "held"), "call")
    await ctx.call(IFACE, "Hangup", "s", [cid])
    ctx.out({"call": cid}, f"hung up {cid}")
    return 0


async def hold(ctx: CtlContext, args: argparse.Namespace) -> int:
    cid = await _pick(ctx, args.call, ("active",), "active call")
    await ctx.call(IFACE, "Hold", "s", [cid])
    ctx.out({"call": cid}, f"{cid} on hold")
    return 0


async def resume(ctx: CtlContext, args: argparse.Namespace) -> int:
    cid = await _pick(ctx, args.call, ("held",), "held call")
    await ctx.call(IFACE, "Resume", "s", [cid])
    ctx.out({"call": cid}, f"{cid} resumed")
    return 0


async def swap(ctx: CtlContext, args: argparse.Namespace) -> int:
    await ctx.call(IFACE, "Swap", "s", [args.phone])
    ctx.out({}, "swapped")
    return 0


async def tones(ctx: CtlContext, args: argparse.Namespace) -> int:
    await ctx.call(IFACE, "SendTones", "ss", [args.call, args.tones])
    ctx.out({"call": args.call, "tones": args.tones}, f"sent {args.tones}")
    return 0
