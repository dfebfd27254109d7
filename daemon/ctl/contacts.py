"""``dashbridgectl contacts ...``: search, lookup, show, history, resync, status.

A client of ``org.dashbridge.Contacts1`` only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from pathlib import Path
from typing import Any

from ..dbus import names
from ..dbus.call import unwrap
from . import CtlContext

IFACE = names.DASHBRIDGE_CONTACTS_IFACE


def register(sub: Any) -> None:
    p = sub.add_parser("contacts", help="phonebook, caller ID and call history of the connected phones")
    csub = p.add_subparsers(dest="contacts_command", metavar="ACTION")
    p.set_defaults(func=_status)

    sp = csub.add_parser("search", help="contacts whose name (or number) contains TEXT")
    sp.add_argument("text")
    sp.add_argument("--limit", type=int, default=20)
    sp.set_defaults(func=_search)

    lp = csub.add_parser("lookup", help="caller ID: the contact for a phone number")
    lp.add_argument("number")
    lp.set_defaults(func=_lookup)

    shp = csub.add_parser("show", help="one contact: numbers, e-mails, addresses")
    shp.add_argument("id", type=int)
    shp.add_argument("--photo", metavar="FILE", help="write the contact's photo to FILE")
    shp.set_defaults(func=_show)

    hp = csub.add_parser("history", help="recent calls, newest first")
    hp.add_argument("--phone", default="", help="this phone's (address; default: the primary phone)")
    hp.add_argument("--limit", type=int, default=20)
    hp.set_defaults(func=_history)

    rp = csub.add_parser("resync", help="pull the phonebook again now")
    rp.add_argument("phone", nargs="?", default="", help="address (default: every phone being synced)")
    rp.set_defaults(func=_resync)

    stp = csub.add_parser("status", help="sync state of each phone")
    stp.set_defaults(func=_status)


async def _search(ctx: CtlContext, args: argparse.Namespace) -> int:
    (raw,) = await ctx.call(IFACE, "Search", "su", [args.text, max(1, min(args.limit, 500))])
    rows = [unwrap(r) for r in raw]
    limit = max(1, min(args.limit, 500))

    def human() -> str:
        if not rows:
            return "no contact found"
        return "\n".join(f"{r['Id']:>6}  {r['Name']:<28} {r['Number']:<20} {r['Phone']}" for r in rows)

    ctx.out(rows, human)
    if len(rows) >= limit:  # there may be more: say so (on stderr, so --json stays one document)
        print(f"(the first {len(rows)} matches; --limit N shows up to 500)", file=sys.stderr)
    return 0 if rows else 1


async def _lookup(ctx: CtlContext, args: argparse.Namespace) -> int:
    name, cid = await ctx.call(IFACE, "Lookup", "s", [args.number])
    ctx.out({"name": name, "id": cid}, f"{name} (id {cid})")
    return 0


async def _show(ctx: CtlContext, args: argparse.Namespace) -> int:
    (raw,) = await ctx.call(IFACE, "GetContact", "t", [args.id])
    c = unwrap(raw)
    photo = c.pop("Photo", None) or None  # an empty photo is no photo
    if photo is not None:
        c["PhotoBytes"] = len(photo)
        if args.photo:
            await asyncio.to_thread(Path(args.photo).write_bytes, bytes(photo))

    def human() -> str:
        lines = [f"{c['Name']}  (id {c['Id']}, phone {c['Phone']}{', favourite' if c.get('Favourite') else ''})"]
        for n, kind in c.get("Numbers", []):
            lines.append(f"  tel    {n}  {kind}")
        for e, kind in c.get("Emails", []):
            lines.append(f"  email  {e}  {kind}")
        for a, kind in c.get("Addresses", []):
            lines.append(f"  adr    {a}  {kind}")
        for key in ("Organization", "Title", "Nickname", "Birthday"):
            if c.get(key):
                lines.append(f"  {key.lower():<6} {c[key]}")
        if photo is not None:
            lines.append(f"  photo  {c.get('PhotoType', '')}, {len(photo)} bytes"
                         + (f" -> {args.photo}" if args.photo else ""))
        return "\n".join(lines)

    ctx.out(c, human)
    if args.photo and photo is None:
        print(f"dashbridgectl: contact {c['Id']} has no photo; {args.photo} was not written", file=sys.stderr)
        return 1
    return 0


async def _history(ctx: CtlContext, args: argparse.Namespace) -> int:
    (raw,) = await ctx.call(IFACE, "GetCallHistory", "su", [args.phone, max(1, min(args.limit, 1000))])
    rows = [unwrap(r) for r in raw]
    arrows = {"received": "<-", "dialed": "->", "missed": "!!"}

    def human() -> str:
        if not rows:
            return "no calls"
        return "\n".join(f"{r['Time']:<20} {arrows.get(r['Kind'], '  ')} {r['Name'] or r['Number']:<28}"
                         f" {r['Number'] if r['Name'] else ''}" for r in rows)

    ctx.out(rows, human)
    return 0


async def _resync(ctx: CtlContext, args: argparse.Namespace) -> int:
    (phones,) = await ctx.call(IFACE, "Resync", "s", [args.phone])
    ctx.out(list(phones), "resync started: " + ", ".join(phones))
    return 0


async def _status(ctx: CtlContext, args: argparse.Namespace) -> int:
    (raw,) = await ctx.call(IFACE, "GetSyncStates")
    rows = [unwrap(r) for r in raw]

    def human() -> str:
        if not rows:
            return "no phone connected or synced"
        out = []
        for r in rows:
            when = (datetime.datetime.fromtimestamp(r["LastSynced"]).strftime("%Y-%m-%d %H:%M")
                    if r["LastSynced"] else "never")
            progress = f" {r['Book']} {r['Done']}/{r['Total']}" if r["State"] == "syncing" else ""
            out.append(f"{r['Phone']}  {r['State']}{progress}  contacts {r['Contacts']}, calls {r['CallHistory']},"
                       f" last synced {when}" + (f"\n    {r['Message']}" if r["Message"] else ""))
        return "\n".join(out)

    ctx.out(rows, human)
    return 0

