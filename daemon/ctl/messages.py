"""``dashbridgectl messages ...``: list, show, mark read, delete, reply, send, refresh.

A client of ``org.dashbridge.Messages1`` only.
"""

from __future__ import annotations

import argparse
from typing import Any

from dbus_fast import Variant

from ..dbus import names
from ..dbus.call import unwrap
from . import CtlContext

IFACE = names.DASHBRIDGE_MESSAGES_IFACE


def register(sub: Any) -> None:
    p = sub.add_parser("messages", help="SMS/MMS/e-mail of the connected phone")
    msub = p.add_subparsers(dest="messages_command", metavar="ACTION")
    p.set_defaults(func=_list)

    lp = msub.add_parser("list", help="stored messages, newest first")
    lp.add_argument("--phone", default="", help="only this phone (address)")
    lp.add_argument("--folder", default="", choices=["", "inbox", "outbox", "sent", "deleted", "draft"])
    lp.add_argument("--type", default="", choices=["", "sms", "mms", "email"])
    lp.add_argument("--unread", action="store_true", help="only unread messages")
    lp.add_argument("--limit", type=int, default=20)
    lp.set_defaults(func=_list)

    sp = msub.add_parser("show", help="one message with its whole text")
    sp.add_argument("id", help="message id, AA:BB:CC:DD:EE:FF/<handle>")
    sp.set_defaults(func=_show)

    for name, read in (("read", True), ("unread", False)):
        rp = msub.add_parser(name, help=f"mark a message {name} (on the phone too)")
        rp.add_argument("id")
        rp.set_defaults(func=_mark, read=read)

    dp = msub.add_parser("delete", help="delete a message on the phone and in the car")
    dp.add_argument("id")
    dp.set_defaults(func=_delete)

    rp = msub.add_parser("reply", help="reply to a received message")
    rp.add_argument("id")
    rp.add_argument("text")
    rp.set_defaults(func=_reply)

    np = msub.add_parser("send", help="send an SMS (or an e-mail with --email)")
    np.add_argument("recipient", help="phone number (or e-mail address with --email)")
    np.add_argument("text")
    np.add_argument("--email", action="store_true", help="send an e-mail instead of an SMS")
    np.add_argument("--subject", default="")
    np.add_argument("--phone", default="", help="from this phone (default: the primary phone)")
    np.set_defaults(func=_send)

    fp = msub.add_parser("refresh", help="ask the phone for new messages now")
    fp.add_argument("--phone", default="")
    fp.set_defaults(func=_refresh)


def _line(m: dict[str, Any]) -> str:
    when = m["received"][11:16] if len(m["received"]) >= 16 else m["received"]
    who = m["sender_name"] or m["sender"] if m["direction"] == "in" else f"to {m['recipient']}"
    text = f"{m['subject']} — {m['preview']}" if m["subject"] else m["preview"]
    mark = " " if m["read"] else "*"
    return f"{mark} {m['id']:<24} {when:>5}  {m['type']:<5}  {who}: {text}"


async def _list(ctx: CtlContext, args: argparse.Namespace) -> int:
    flt: dict[str, Variant] = {"limit": Variant("u", max(1, min(getattr(args, "limit", 20), 500)))}
    for key in ("phone", "folder", "type"):
        if getattr(args, key, ""):
            flt[key] = Variant("s", getattr(args, key))
    if getattr(args, "unread", False):
        flt["unread"] = Variant("b", True)
    (raw,) = await ctx.call(IFACE, "List", "a{sv}", [flt])
    items = [unwrap(m) for m in raw]

    def human() -> str:
        if not items:
            return "no messages"
        return "\n".join(_line(m) for m in items)

    ctx.out(items, human)
    return 0


async def _show(ctx: CtlContext, args: argparse.Namespace) -> int:
    (raw,) = await ctx.call(IFACE, "Get", "s", [args.id])
    m = unwrap(raw)

    def human() -> str:
        who = f"{m['sender_name']} <{m['sender']}>" if m["sender_name"] != m["sender"] else m["sender"]
        lines = [f"{m['type']} {m['direction']} {m['folder']}  {m['received']}",
                 f"from: {who}" if m["direction"] == "in" else f"to: {m['recipient']}"]
        if m["subject"]:
            lines.append(f"subject: {m['subject']}")
        lines += ["", m["body"] or f"(no text: {m['body_state']})"]
        for a in m["attachments"]:
            lines.append(f"[attachment] {a['name'] or '(unnamed)'} {a['type']} {a['size']} bytes")
        for p in m["problems"]:
            lines.append(f"[repaired] {p}")
        return "\n".join(lines)

    ctx.out(m, human)
    return 0


async def _mark(ctx: CtlContext, args: argparse.Namespace) -> int:
    await ctx.call(IFACE, "MarkRead", "sb", [args.id, args.read])
    ctx.out({"id": args.id, "read": args.read}, f"{args.id}: marked {'read' if args.read else 'unread'}")
    return 0


async def _delete(ctx: CtlContext, args: argparse.Namespace) -> int:
    await ctx.call(IFACE, "Delete", "s", [args.id])
    ctx.out({"id": args.id, "deleted": True}, f"{args.id}: deleted")
    return 0


async def _reply(ctx: CtlContext, args: argparse.Namespace) -> int:
    (sent,) = await ctx.call(IFACE, "Reply", "ss", [args.id, args.text])
    ctx.out({"id": sent}, f"sent: {sent}")
    return 0


async def _send(ctx: CtlContext, args: argparse.Namespace) -> int:
    kind = "email" if args.email else "sms"
    (sent,) = await ctx.call(IFACE, "Send", "sssss", [args.phone, kind, args.recipient, args.subject, args.text])
    ctx.out({"id": sent}, f"sent: {sent}")
    return 0


# Refresh talks to the phone (UpdateInbox, a listing, new messages downloaded): it may take longer
# than a call to the daemon alone; the daemon bounds each transfer itself.
REFRESH_TIMEOUT_S = 60.0


async def _refresh(ctx: CtlContext, args: argparse.Namespace) -> int:
    (n,) = await ctx.call(IFACE, "Refresh", "s", [args.phone], timeout=max(ctx.timeout, REFRESH_TIMEOUT_S))
    ctx.out({"new": n}, f"{n} new message(s)")
    return 0
