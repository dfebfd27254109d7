"""``dashbridge-hmi``: a virtual head unit in the browser — a client of the public D-Bus API only.

Serves the page (``static/``: plain HTML, CSS and JavaScript modules, no build step) and the
bridge (:mod:`.bridge`) on ``127.0.0.1`` (never another interface unless ``--host`` says so) and
prints its URL.  The bridge's D-Bus connection is a dashboard client like any other: the daemon's
caller gate applies to it, so run this as a user in the ``dashboard`` group.  docs/hmi.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from .bridge import HmiServer

DEFAULT_PORT = 8765


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hmi-host", "--host", dest="hmi_host", default="127.0.0.1",
                   help="interface to serve the page on (default 127.0.0.1: this machine only)")
    p.add_argument("--hmi-port", "--port", dest="hmi_port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 0: any free port)")


async def _amain(args: argparse.Namespace) -> int:
    address = args.address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    server = HmiServer(address, args.hmi_host, args.hmi_port)
    try:
        await server.start()
    except (OSError, TimeoutError) as exc:
        where = "the bus " + (address or "(the system bus)") if server.bridge.bus is None else server.url
        await server.close()
        print(f"dashbridge-hmi: cannot start: {where}: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"dashbridge-hmi: the virtual head unit is at {server.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dashbridge-hmi",
                                description="a virtual head unit in the browser, on the org.dashbridge D-Bus API")
    p.add_argument("--address", default=None,
                   help="bus address (default: $DBUS_SYSTEM_BUS_ADDRESS or the system bus)")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return asyncio.run(_amain(args))
    except KeyboardInterrupt:
        return 130
