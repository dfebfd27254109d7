"""``dashbridge-sim``: the world around the daemon, on private buses.

Sub-commands: ``up`` (buses, fakes and the daemon until Ctrl-C), ``demo`` (the headline story).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from .bus import PrivateBus
from .daemonproc import DaemonProcess


class Timeline:
    """A readable timeline of what the driver would see."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.2f}s] {text}", flush=True)


async def _demo(args: argparse.Namespace) -> int:
    tl = Timeline()
    system = await PrivateBus("system").astart()
    session = await PrivateBus("session").astart()
    tl.say("private system and session buses up")
    daemon = DaemonProcess(system.address, session.address)
    try:
        daemon.start(wait_ready=False)
        ready = await daemon.await_ready(30)
        tl.say(f"dashbridged ready (READY=1, STATUS={ready.get('STATUS', '')})")
        from daemon.dbus.bus import connect
        from daemon.dbus.call import get_property

        client = await connect(system.address)
        health = await get_property(client, "org.dashbridge", "/org/dashbridge", "org.dashbridge.Daemon1", "Health")
        for name, (state, reason) in sorted(health.items()):
            tl.say(f"  health {name}: {state}{' — ' + reason if reason else ''}")
        client.disconnect()
        rc = await daemon.astop()
        tl.say(f"dashbridged stopped cleanly (exit {rc}, STOPPING=1 seen: {bool(daemon.notify.seen('STOPPING'))})")
        return 0 if rc == 0 else 1
    finally:
        daemon.cleanup()
        system.stop()
        session.stop()
        tl.say("everything stopped; nothing left running")


async def _up(args: argparse.Namespace) -> int:
    system = await PrivateBus("system").astart()
    session = await PrivateBus("session").astart()
    daemon: DaemonProcess | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(f"export DBUS_SYSTEM_BUS_ADDRESS='{system.address}'")
        print(f"export DBUS_SESSION_BUS_ADDRESS='{session.address}'", flush=True)
        if not args.no_daemon:
            daemon = DaemonProcess(system.address, session.address)
            daemon.start(wait_ready=False)
            await daemon.await_ready(30)
            print(f"dashbridged ready (pid {daemon.pid}, log {daemon.log_path}); Ctrl-C stops everything",
                  flush=True)
        else:
            print("run your own daemon with the environment above; Ctrl-C stops the simulator", flush=True)
        await stop.wait()
        return 0
    finally:
        if daemon is not None:
            daemon.cleanup()
        system.stop()
        session.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dashbridge-sim", description="the world around dashbridged, simulated")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    up = sub.add_parser("up", help="start buses, fakes and the daemon until Ctrl-C")
    up.add_argument("--no-daemon", action="store_true", help="print the environment; run your own daemon")
    up.set_defaults(func=_up)
    demo = sub.add_parser("demo", help="play the headline story with a readable timeline")
    demo.set_defaults(func=_demo)
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        rc: int = asyncio.run(args.func(args))
        return rc
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
