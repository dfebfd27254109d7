"""``dashbridgectl``: the command line to the daemon — a client of the public D-Bus API only.

Each area is a module in this package with ``register(sub)`` adding its sub-commands; a command
is ``async def cmd(ctx: CtlContext, args) -> int``.  Human output by default, ``--json`` for
scripts; a daemon error is one clear line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dbus_fast.aio import MessageBus

from ..dbus import names
from ..dbus.call import call
from ..dbus.errors import BusError

# Areas, in the order `dashbridgectl --help` lists them.
COMMAND_MODULES = ["status", "phones", "calls", "contacts", "messages", "nav", "cloud", "monitor"]

DEFAULT_TIMEOUT_S = 10.0


@dataclass
class CtlContext:
    bus: MessageBus
    json: bool
    timeout: float

    async def call(self, iface: str, member: str, signature: str = "", body: list[Any] | None = None,
                   *, timeout: float | None = None) -> list[Any]:
        return await call(self.bus, names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH, iface, member, signature,
                          body or [], timeout=timeout or self.timeout)

    async def props(self, iface: str) -> dict[str, Any]:
        from ..dbus.call import unwrap_props

        (props,) = await call(self.bus, names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH, names.PROPERTIES_IFACE,
                              "GetAll", "s", [iface], timeout=self.timeout)
        return unwrap_props(props)

    def out(self, data: Any, human: str | Callable[[], str]) -> None:
        if self.json:
            print(json.dumps(data, indent=2, sort_keys=True, default=str))
        else:
            print(human() if callable(human) else human)


Command = Callable[[CtlContext, argparse.Namespace], Awaitable[int]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dashbridgectl", description="Command line to the dashbridge daemon")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the daemon")
    p.add_argument("--address", default=None,
                   help="bus address (default: $DBUS_SYSTEM_BUS_ADDRESS or the system bus)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{mod_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{mod_name}":
                continue  # area not built yet
            raise
        mod.register(sub)
    _everywhere(p)
    return p


def _everywhere(parser: argparse.ArgumentParser) -> None:
    """``--json`` (and ``--timeout``) are accepted after the sub-command too, at every level:
    ``dashbridgectl contacts search mum --json`` is ``dashbridgectl --json contacts search mum``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if "--json" not in child._option_string_actions:
                    child.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                       help="machine-readable output")
                if "--timeout" not in child._option_string_actions:
                    child.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                                       help="seconds to wait for the daemon")
                _everywhere(child)


async def _amain(args: argparse.Namespace) -> int:
    from ..dbus.bus import connect

    address = args.address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    try:
        bus = await connect(address, "system", timeout=args.timeout)
    except (OSError, TimeoutError) as exc:
        where = address or "the system bus"
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
            f"no answer within {args.timeout:g}s" if isinstance(exc, TimeoutError) else str(exc))
        _error(args, "CannotReachBus", f"cannot reach the bus ({where}): {why}")
        return 2
    try:
        ctx = CtlContext(bus, args.json, args.timeout)
        rc: int = await args.func(ctx, args)
        return rc
    except BusError as exc:
        _error(args, exc.name.rsplit(".", 1)[-1], _describe(exc), exc.name)
        return 1
    finally:
        bus.disconnect()


def _error(args: argparse.Namespace, code: str, text: str, name: str = "") -> None:
    """One clear line on stderr; with --json, also one JSON document on stdout for scripts."""
    print(f"dashbridgectl: {text}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": code, "name": name, "message": text}}, sort_keys=True))


def _describe(exc: BusError) -> str:
    if exc.name in (names.ERR_SERVICE_UNKNOWN, names.ERR_NAME_HAS_NO_OWNER):
        return "the dashbridge daemon is not running"
    short = exc.name.rsplit(".", 1)[-1]
    return f"{short}: {exc.text}" if exc.text else short


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return asyncio.run(_amain(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `dashbridgectl ... | head`: the reader left; stop quietly like other command-line tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
