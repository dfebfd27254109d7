"""``dashbridgectl phones|pair|connect|disconnect|forget|priority``: paired phones and pairing.

A client of ``org.dashbridge.Phones1`` only.  ``pair`` opens the pairing window and answers the
prompt interactively (or with ``--accept`` / ``--reject`` / ``--pin`` for scripts), then reports
how the pairing ended.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

from dbus_fast import Message, MessageType

from ..dbus import names
from ..dbus.call import call, unwrap
from ..dbus.errors import BusError
from . import CtlContext

IFACE = names.DASHBRIDGE_PHONES_IFACE


def register(sub: Any) -> None:
    p = sub.add_parser("phones", help="paired phones, their state, role and priority")
    p.set_defaults(func=phones)

    p = sub.add_parser("pair", help="open the pairing window and pair a phone")
    p.add_argument("--seconds", type=int, default=0, help="how long the car stays discoverable (default: config)")
    # (--address is taken: it is dashbridgectl's bus address)
    p.add_argument("--phone", metavar="ADDRESS",
                   help="pair from the car with this nearby phone (default: wait for the phone to pair)")
    answer = p.add_mutually_exclusive_group()
    answer.add_argument("--accept", action="store_true", help="accept the prompt without asking (scripts)")
    answer.add_argument("--reject", action="store_true", help="reject the prompt without asking (scripts)")
    p.add_argument("--pin", default="", help="PIN or passkey to answer an entry prompt with (answers it: "
                                             "no --accept needed)")
    p.set_defaults(func=pair)

    for name, helptext in (("connect", "connect a paired phone now"),
                           ("disconnect", "disconnect a phone (it stays paired)"),
                           ("forget", "unpair a phone and delete everything stored about it")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("phone", metavar="address", help="the phone's Bluetooth address, AA:BB:CC:DD:EE:FF")
        p.set_defaults(func=_simple(name.capitalize()))

    p = sub.add_parser("priority", help="move a phone in the auto-connect order (0 = first)")
    p.add_argument("phone", metavar="address", help="the phone's Bluetooth address")
    p.add_argument("position", type=int, help="0 = first")
    p.set_defaults(func=priority)


async def phones(ctx: CtlContext, args: argparse.Namespace) -> int:
    (raw,) = await ctx.call(IFACE, "ListPhones")
    items = [unwrap(p) for p in raw]

    def human() -> str:
        if not items:
            return "no paired phones (pair one with: dashbridgectl pair)"
        lines = [f"{'#':>2}  {'address':<17}  {'state':<13} {'role':<9}  name"]
        for p in items:
            lines.append(f"{p['Priority']:>2}  {p['Address']:<17}  {p['State']:<13} {p['Role'] or '-':<9}  {p['Name']}")
        return "\n".join(lines)

    ctx.out(items, human)
    return 0


def _simple(member: str) -> Any:
    async def run(ctx: CtlContext, args: argparse.Namespace) -> int:
        await ctx.call(IFACE, member, "s", [args.phone])
        ctx.out({"address": args.phone.upper(), "done": member.lower()},
                f"{member.lower()}: {args.phone.upper()} ok")
        return 0

    return run


async def priority(ctx: CtlContext, args: argparse.Namespace) -> int:
    if args.position < 0:
        print("dashbridgectl: position must be 0 or more", file=sys.stderr)
        return 2
    await ctx.call(IFACE, "SetPriority", "su", [args.phone, args.position])
    ctx.out({"address": args.phone.upper(), "position": args.position},
            f"{args.phone.upper()} moved to position {args.position}")
    return 0


async def _ask(question: str, timeout: float) -> str | None:
    """One line from stdin, or None when the prompt's time ran out first (no thread left behind
    blocked on input(): stdin is watched by the event loop)."""
    print(question, end="", flush=True)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if not answer.done():
            answer.set_result(sys.stdin.readline())

    try:
        loop.add_reader(fd, readable)
    except (PermissionError, ValueError, OSError):
        # stdin is a regular file (epoll cannot watch those): it is readable right away.
        return sys.stdin.readline().rstrip("\n")
    try:
        async with asyncio.timeout(timeout):
            return (await answer).rstrip("\n")
    except TimeoutError:
        print()
        return None
    finally:
        loop.remove_reader(fd)


async def pair(ctx: CtlContext, args: argparse.Namespace) -> int:
    queue: asyncio.Queue[Message] = asyncio.Queue()

    def on(msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.interface == IFACE:
            queue.put_nowait(msg)

    ctx.bus.add_message_handler(on)
    await call(ctx.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
               [f"type='signal',sender='{names.DASHBRIDGE_NAME}',interface='{IFACE}'"], timeout=ctx.timeout)
    (granted,) = await ctx.call(IFACE, "OpenPairingWindow", "u", [max(0, args.seconds)])
    target = args.phone.upper() if args.phone else None
    if target:
        await _pair_when_found(ctx, target, queue, granted)
        _say(ctx, f"pairing with {target}...")
    else:
        _say(ctx, f"the car is visible for {granted}s: choose it on the phone (Ctrl-C to stop)")
    deadline = time.monotonic() + granted + 5
    result: dict[str, Any] = {"paired": False}
    finished = False
    try:
        while not finished:
            left = deadline - time.monotonic()
            if left <= 0:
                result["reason"] = "no phone paired while the window was open"
                break
            try:
                async with asyncio.timeout(left):
                    msg = await queue.get()
            except TimeoutError:
                continue
            body = unwrap(list(msg.body))
            if msg.member == "PromptRequested":
                await _prompt(ctx, args, body, target)
            elif msg.member == "PromptCancelled":
                _say(ctx, f"prompt {body[0]} closed ({body[1]})")
            elif msg.member == "DeviceFound" and not target:
                _say(ctx, f"found {body[1]} ({body[0]})")
            elif msg.member == "PairingFinished" and (target is None or body[0] == target):
                result = {"address": body[0], "paired": bool(body[1]), "reason": body[2]}
                finished = True
    except (KeyboardInterrupt, asyncio.CancelledError):
        result["reason"] = "interrupted"
        raise
    finally:
        if not result.get("paired"):
            with contextlib.suppress(BusError):
                await ctx.call(IFACE, "ClosePairingWindow", timeout=2.0)
    if result.get("paired"):
        ctx.out(result, f"paired with {result['address']}")
        return 0
    ctx.out(result, f"not paired: {result.get('reason') or 'failed'}")
    return 1


# After the window opens, the car needs a moment to find a phone that is in range (an inquiry
# answer); asking to pair before then is "no such phone nearby".  Wait this long for it.
FIND_WAIT_S = 15.0


async def _pair_when_found(ctx: CtlContext, target: str, queue: asyncio.Queue[Message], granted: int) -> None:
    """``Phones1.Pair`` once the car has seen the phone: at once if it has, else after its
    ``DeviceFound`` (the window was just opened), within ``FIND_WAIT_S``."""
    try:
        await ctx.call(IFACE, "Pair", "s", [target])
        return
    except BusError as exc:
        if exc.name != names.DB_ERR_NOT_FOUND:
            raise
    _say(ctx, f"looking for {target}...")
    held: list[Message] = []
    try:
        async with asyncio.timeout(min(FIND_WAIT_S, max(1, granted))):
            while True:
                msg = await queue.get()
                held.append(msg)
                if msg.member == "DeviceFound" and str(msg.body[0]).upper() == target:
                    break
    except TimeoutError:
        raise BusError(names.DB_ERR_NOT_FOUND, f"{target} was not found nearby within "
                       f"{min(FIND_WAIT_S, max(1, granted)):g}s (is it in range and discoverable?)") from None
    finally:
        for m in held:  # the rest of the conversation still sees these
            queue.put_nowait(m)
    await ctx.call(IFACE, "Pair", "s", [target])


async def _prompt(ctx: CtlContext, args: argparse.Namespace, body: list[Any], target: str | None) -> None:
    prompt_id, kind, address, name, code, timeout = body
    timeout = int(timeout)
    if target and address != target:
        return
    who = f"{name} ({address})"
    _say(ctx, f"prompt {prompt_id}: {kind}, {timeout}s to answer")
    if kind in ("display_pin", "display_passkey"):
        _say(ctx, f"type {code} on {who}")
        return
    question = {
        "confirm_passkey": f"{who} shows {code}? [y/N] ",
        "authorize_pairing": f"pair with {who}? [y/N] ",
        "authorize_service": f"allow {who} to use service {code}? [y/N] ",
        "enter_pin": f"PIN for {who}: ",
        "enter_passkey": f"passkey shown on {who}: ",
    }.get(kind, f"{kind} for {who}? [y/N] ")
    value = ""
    if args.pin and kind.startswith("enter_") and not args.reject:
        accept, value = True, args.pin  # --pin answers an entry prompt by itself
        _say(ctx, question + value)
    elif args.accept or args.reject:
        accept = bool(args.accept)
        value = args.pin if kind.startswith("enter_") else ""
        _say(ctx, question + ("yes" if accept else "no") + (f" ({value})" if value else ""))
    else:
        typed = await _ask(question, timeout)
        if typed is None:
            _say(ctx, f"prompt {prompt_id}: no answer in {timeout}s")
            return
        reply = typed.strip()
        if kind.startswith("enter_"):
            accept, value = bool(reply), reply
        else:
            accept = reply.lower() in ("y", "yes")
    try:
        await ctx.call(IFACE, "AnswerPrompt", "ubs", [prompt_id, accept, value])
    except BusError as exc:
        _say(ctx, f"answer not taken: {exc.text or exc.name}")


def _say(ctx: CtlContext, text: str) -> None:
    # Progress goes to stderr in --json mode so stdout stays one JSON document.
    print(text, file=sys.stderr if ctx.json else sys.stdout, flush=True)
