"""``dashbridgectl cloud ...``: the cloud as the car sees it, and why every feature is on or off.

``dashbridgectl cloud`` explains the backend state, registration, account link, entitlement
source and each feature's source and reason; ``cloud register``, ``cloud link [CODE]``,
``cloud sync [--wait N]``, ``cloud consent NAME on|off``.  A client of ``org.dashbridge.Cloud1`` only.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from dbus_fast import Message, MessageType

from ..dbus import names
from ..dbus.call import call
from . import CtlContext

IFACE = names.DASHBRIDGE_CLOUD_IFACE


def register(sub: Any) -> None:
    p = sub.add_parser("cloud", help="backend state, registration, account link, entitlements and features")
    p.set_defaults(func=_show)
    csub = p.add_subparsers(dest="cloud_command", metavar="ACTION")
    csub.add_parser("show", help="explain the state and every feature's source (the default)").set_defaults(
        func=_show)
    csub.add_parser("register", help="register this vehicle with the backend (queued)").set_defaults(
        func=_register)
    lp = csub.add_parser("link", help="link the driver's account: with CODE from the app, or show a code")
    lp.add_argument("code", nargs="?", default="", help="the code the app shows (omit to get one to show)")
    lp.set_defaults(func=_link)
    sp = csub.add_parser("sync", help="sync entitlements and send-to-car destinations now")
    sp.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="wait up to this long for the sync to finish and show the result")
    sp.set_defaults(func=_sync)
    cp = csub.add_parser("consent", help="record a consent and queue it for the backend")
    cp.add_argument("name")
    cp.add_argument("value", choices=["on", "off"])
    cp.set_defaults(func=_consent)


def _when(ts: int, now: float | None = None) -> str:
    if not ts:
        return "never"
    now = time.time() if now is None else now
    delta = ts - now
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
    span = abs(delta)
    if span < 90:
        rel = f"{span:.0f}s"
    elif span < 5400:
        rel = f"{span / 60:.0f}m"
    elif span < 2 * 86400:
        rel = f"{span / 3600:.0f}h"
    else:
        rel = f"{span / 86400:.0f}d"
    return f"{stamp} ({'in ' + rel if delta > 0 else rel + ' ago'})"


def explain(p: dict[str, Any]) -> str:
    """The human view of Cloud1's properties (also used by the tests)."""
    if not p["Enabled"]:
        lines = ["cloud: disabled (cloud.enabled is false in the config)"]
    else:
        api = f"API v{p['ApiVersion']}" if p["ApiVersion"] else "API not discovered yet"
        lines = [f"cloud: {p['BackendState']} — {p['BackendReason']}",
                 f"  endpoint:      {p['Endpoint'] or '-'} ({api})",
                 f"  last sync:     {_when(p['LastSync'])}; next {_when(p['NextSync'])}",
                 f"  outbox:        {p['OutboxDepth']} waiting"]
        reg = p["Registration"] + (f" — {p['RegistrationReason']}" if p["RegistrationReason"] else "")
        lines.append(f"  registration:  {reg}")
        link = p["AccountLink"] + (f" — {p['AccountLinkReason']}" if p["AccountLinkReason"] else "")
        lines.append(f"  account:       {link}")
        code, uri, exp = p["LinkCode"]
        if code:
            lines.append(f"  link code:     {code}  (enter it at {uri}; expires {_when(exp)})")
        src = p["EntitlementsSource"]
        if p["EntitlementsVersion"]:
            lines.append(f"  entitlements:  {src} — version {p['EntitlementsVersion']}, lease until "
                         f"{_when(p['EntitlementsNotAfter'])}, grace until {_when(p['GraceUntil'])}")
        else:
            lines.append(f"  entitlements:  {src} — no signed document held")
        reason, at = p["LastRejection"]
        if reason:
            lines.append(f"  last rejected: {reason} ({_when(at)})")
        waiting, note = p["SendToCar"]
        if waiting:
            lines.append(f"  send-to-car:   {waiting} waiting — {note}")
        if p["Consents"]:
            lines.append("  consents:      " + ", ".join(f"{k}={'on' if v else 'off'}"
                                                        for k, v in sorted(p["Consents"].items())))
    lines.append("features:")
    feats = p["Features"]
    if not feats:
        lines.append("  (none known)")
    width = max((len(k) for k in feats), default=0)
    for name, (enabled, source, reason) in sorted(feats.items()):
        lines.append(f"  {name:<{width}}  {'on ' if enabled else 'off'}  {source:<14}  {reason}")
    return "\n".join(lines)


async def _show(ctx: CtlContext, args: argparse.Namespace) -> int:
    p = await ctx.props(IFACE)
    data = dict(p)
    data["Features"] = {k: {"enabled": v[0], "source": v[1], "reason": v[2]} for k, v in p["Features"].items()}
    ctx.out(data, lambda: explain(p))
    return 0


async def _register(ctx: CtlContext, args: argparse.Namespace) -> int:
    (state,) = await ctx.call(IFACE, "Register")
    ctx.out({"registration": state}, f"registration: {state}" + (
        " (queued; it is delivered whenever the backend is reachable)" if state == "pending" else ""))
    return 0


async def _link(ctx: CtlContext, args: argparse.Namespace) -> int:
    (state,) = await ctx.call(IFACE, "LinkAccount", "s", [args.code])
    ctx.out({"account": state}, f"account: {state}" + (
        " (a code to show will appear in `dashbridgectl cloud`)" if state == "requesting-code" else ""))
    return 0


async def _consent(ctx: CtlContext, args: argparse.Namespace) -> int:
    await ctx.call(IFACE, "SetConsent", "sb", [args.name, args.value == "on"])
    ctx.out({"consent": args.name, "granted": args.value == "on"}, f"consent {args.name}: {args.value} (queued)")
    return 0


async def _sync(ctx: CtlContext, args: argparse.Namespace) -> int:
    finished: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()

    def on(msg: Message) -> None:
        if (msg.message_type == MessageType.SIGNAL and msg.interface == IFACE and msg.member == "SyncFinished"
                and not finished.done()):
            finished.set_result((bool(msg.body[0]), str(msg.body[1])))

    if args.wait > 0:  # subscribe before asking, so the answer cannot slip past
        ctx.bus.add_message_handler(on)
        await call(ctx.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
                   [f"type='signal',sender='{names.DASHBRIDGE_NAME}',interface='{IFACE}',member='SyncFinished'"],
                   timeout=ctx.timeout)
    (result,) = await ctx.call(IFACE, "SyncNow")
    if args.wait <= 0 or result != "started":
        ctx.out({"sync": result}, f"sync: {result}")
        return 0
    try:
        async with asyncio.timeout(args.wait):
            ok, reason = await finished
        outcome = "done" if ok else f"failed: {reason}"
    except TimeoutError:
        ok, outcome = False, f"not finished within {args.wait:g}s"
    p = await ctx.props(IFACE)
    ctx.out({"sync": outcome, "backend": p["BackendState"]}, lambda: f"sync: {outcome}\n" + explain(p))
    return 0 if ok else 1
