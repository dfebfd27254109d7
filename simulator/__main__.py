"""``dashbridge-sim``: the world around the daemon, on private buses.

Sub-commands:

* ``up`` — private buses, every fake that exists, and the daemon, until Ctrl-C (``--no-daemon``:
  print the environment so a developer runs their own daemon, e.g. under a debugger);
* ``shell`` — an interactive prompt to act as the world (phones, faults, the backend): it joins the
  world of a running ``up`` (``simulator/worldshare.py``), or starts its own (``--new``: always);
* ``run FILE... [-j N] [--junit PATH]`` — YAML scenarios, each in its own world, with a report;
* ``demo`` — the headline story with a readable timeline of what the driver would see.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .world import WorldSpec
from .worldargs import world_spec


async def _up(args: argparse.Namespace, spec: WorldSpec) -> int:
    from .world import World, WorldError
    from .worldargs import developer_env, export_line
    from .worldshare import ControlServer, publish, unpublish

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    world = World(spec)
    published: Path | None = None
    control: ControlServer | None = None
    hmi: Any = None
    try:
        try:
            await world.start()
        except WorldError as exc:
            print(f"dashbridge-sim: {exc}", file=sys.stderr)
            return 1
        for k, v in developer_env(world).items():
            print(export_line(k, v))
        cfg_path = Path(args.write_config) if args.write_config else None
        if cfg_path is not None:
            world.write_config(cfg_path)
        control = await ControlServer(world, world.tmpdir / "control.sock").start()
        if args.hmi:
            from dashbridge.daemon.hmi.bridge import HmiServer

            from .worldpanel import WorldPanel

            hmi = HmiServer(world.env()["DBUS_SYSTEM_BUS_ADDRESS"], args.hmi_host, args.hmi_port,
                            extra=WorldPanel(world).install)
            try:
                await hmi.start()
            except OSError as exc:
                print(f"dashbridge-sim: cannot serve the virtual head unit on {hmi.url}: {exc}", file=sys.stderr)
                return 1
        try:
            published, other = publish(world, control.path)
        except OSError as exc:
            published, other = None, None
            print(f"dashbridge-sim: cannot publish the world for dashbridge-sim shell: {exc}", file=sys.stderr)
        print(file=sys.stderr)
        for p in world.phones.values():
            print(f"  phone {p.name} ({p.address}): {'paired before' if p.bonded else 'not paired'}",
                  file=sys.stderr)
        for name in world.fakes:
            print(f"  fake {name}: running", file=sys.stderr)
        for name, why in world.missing.items():
            print(f"  fake {name}: not available ({why})", file=sys.stderr)
        if published is not None:
            print(f"  shell: dashbridge-sim shell joins this world ({published})", file=sys.stderr)
        elif other is not None:
            print(f"  shell: another dashbridge-sim up (pid {other.pid}) is running; dashbridge-sim shell joins "
                  "that one, not this", file=sys.stderr)
        if hmi is not None:
            print(f"  virtual head unit (dashbridge-hmi): {hmi.url}", file=sys.stderr)
            print(f"  the car's screen beside the world panel (phones, backend, services, time): {hmi.url}world",
                  file=sys.stderr)
        if world.daemon is not None:
            print(f"  dashbridged: ready (pid {world.daemon.pid}, log {world.daemon.log_path})", file=sys.stderr)
            print("Ctrl-C stops everything.", file=sys.stderr, flush=True)
        else:
            hint = f" --config {cfg_path}" if cfg_path else ""
            print("  dashbridged: not started — run your own with the environment above, e.g.\n"
                  f"      .venv/bin/python -m dashbridge.daemon{hint}\n"
                  f"  its state directory: {developer_env(world)['STATE_DIRECTORY']} (removed with the world)\n"
                  "Ctrl-C stops the simulator.", file=sys.stderr, flush=True)
        sys.stdout.flush()
        await stop.wait()
        return 0
    finally:
        unpublish(published)
        if hmi is not None:
            await hmi.close()
        if control is not None:
            await control.close()
        await world.stop()
        print("everything stopped", file=sys.stderr)


def _up_main(args: argparse.Namespace) -> int:
    spec = world_spec(args)
    if spec is None:
        return 2
    return asyncio.run(_up(args, spec))


def _run(args: argparse.Namespace) -> int:
    from . import scenario

    if args.list_steps:
        print(scenario.vocabulary())
        return 0
    if args.worker:
        import json

        r = asyncio.run(scenario.run_file(args.files[0]))
        Path(args.worker).write_text(json.dumps(r.to_json()))
        return 0 if r.ok else 1
    files = scenario.expand(args.files) if args.files else scenario.library()
    if not files:
        print("dashbridge-sim run: no scenario files", file=sys.stderr)
        return 2
    # Check every file before running any: a typo should not cost a whole run.  --tag/--shard
    # choose among them (scenario/cli.py: sorted by file name, the same split on every machine).
    try:
        sel = scenario.select(files, tags=args.tag or (), shard=scenario.parse_shard(args.shard) if args.shard
                              else None)
    except ValueError as exc:
        print(f"dashbridge-sim run: {exc}", file=sys.stderr)
        return 2
    if sel.skipped or sel.other_shards:
        print(f"dashbridge-sim: {len(sel.files) + len(sel.bad)} scenario(s) chosen ({sel.skipped} left out by "
              f"--tag, {sel.other_shards} in other shards)", file=sys.stderr)
    files = sorted(sel.files + ([f for f, _ in sel.bad] if args.keep_going else []))
    if sel.bad and not args.keep_going:
        for _f, bad in sel.bad:
            for e in bad.errors:
                print(f"dashbridge-sim: {e.where_what}", file=sys.stderr)
        if args.junit:
            results = [scenario.ScenarioResult(f, Path(f).stem, False, 0.0, error=str(e), load_error=True)
                       for f, e in sel.bad]
            Path(args.junit).write_text(scenario.junit_xml(results, 0.0))
        return 2
    if not files:
        print("dashbridge-sim run: no scenario chosen", file=sys.stderr)
        return 0 if sel.other_shards else 2
    jobs = args.jobs or min(len(files), os.cpu_count() or 1)
    t0 = time.monotonic()

    def show(r: scenario.ScenarioResult) -> None:
        print(scenario.format_result(r, verbose=args.verbose), flush=True)

    done: list[scenario.ScenarioResult] = []

    def show_and_keep(r: scenario.ScenarioResult) -> None:
        done.append(r)
        show(r)

    try:
        results = asyncio.run(scenario.run_many(files, jobs, show_and_keep,
                                                in_process=jobs == 1 and len(files) == 1,
                                                on_failure=scenario.hold_world if args.keep_on_failure else None))
    except KeyboardInterrupt:
        print(f"interrupted: {scenario.summary(done, time.monotonic() - t0)}; "
              "the running scenarios' worlds were stopped", file=sys.stderr)
        return 130
    seconds = time.monotonic() - t0
    print(scenario.summary(results, seconds))
    if args.junit:
        Path(args.junit).write_text(scenario.junit_xml(results, seconds))
    return 0 if results and all(r.ok for r in results) else 1


def _shell(args: argparse.Namespace) -> int:
    from . import worldshare
    from .shell import main as shell_main

    if not args.new:
        info = worldshare.find()
        if info is not None:
            if args.world or args.phone or args.no_daemon or args.record:
                print(f"dashbridge-sim shell: a world is running (dashbridge-sim up, pid {info.pid}); "
                      "--world/--phone/--no-daemon/--record describe a new one: add --new to start it beside, "
                      "or leave them out to join the running world", file=sys.stderr)
                return 2
            return worldshare.join(info)

    rc: int = shell_main(args)
    return rc


def _demo(args: argparse.Namespace) -> int:
    if args.hmi:
        from .demohmi import play

        return asyncio.run(play(host=args.hmi_host, port=args.hmi_port, pace=args.pace, wait_for_page=args.hmi_wait))
    from .demo import main as demo_main

    return demo_main(args)


def _conformance(rest: list[str]) -> int:
    from .conformance import main as conformance_main

    return conformance_main(rest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dashbridge-sim", description="the world around dashbridged, simulated")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    up = sub.add_parser("up", help="start buses, fakes and the daemon until Ctrl-C")
    up.add_argument("--no-daemon", action="store_true", help="print the environment; run your own daemon")
    up.add_argument("--config", metavar="YAML", help="daemon config overrides (same keys as the config file)")
    up.add_argument("--world", metavar="SCENARIO", help="start the world of this scenario file (phones, config, "
                                                          "backend); its steps are not run")
    up.add_argument("--phone", action="append", metavar="KEY=VALUE,...",
                    help="add a phone, e.g. \"name=Alice's Pixel,address=AA:BB:CC:DD:EE:01,contacts=50\" "
                         "(bonded=true: paired before); repeatable")
    up.add_argument("--write-config", metavar="PATH",
                    help="write the daemon config the world would use (backend URL, TLS files ...) here")
    up.add_argument("--hmi", action="store_true",
                    help="also serve the virtual head unit (a web page on 127.0.0.1) and print its URL")
    up.add_argument("--hmi-host", default="127.0.0.1", help=argparse.SUPPRESS)
    up.add_argument("--hmi-port", type=int, default=8765, metavar="PORT",
                    help="port of the virtual head unit (default 8765; 0: any free port)")
    up.set_defaults(func=_up_main)
    sh = sub.add_parser("shell", help="an interactive prompt to act as the world (joins a running up's world)")
    sh.add_argument("--new", action="store_true",
                    help="start a world of its own even when dashbridge-sim up is running (default: join it)")
    sh.add_argument("--no-daemon", action="store_true", help="do not start the daemon (a world of its own)")
    sh.add_argument("--world", metavar="SCENARIO", help="start with the world of this scenario file")
    sh.add_argument("--phone", action="append", metavar="KEY=VALUE,...", help="add a phone (as for up)")
    sh.add_argument("--record", metavar="FILE.yaml",
                    help="write what was done as a scenario that replays (dashbridge-sim run FILE.yaml); "
                         "a shell with a world of its own")
    sh.set_defaults(func=_shell)
    run = sub.add_parser("run", help="run YAML scenarios (default: the library in simulator/scenarios/)")
    run.add_argument("files", nargs="*", metavar="FILE", help="scenario files or directories")
    run.add_argument("-j", "--jobs", type=int, default=0, help="scenarios run in parallel (default: CPUs)")
    run.add_argument("--junit", metavar="PATH", help="write JUnit XML here")
    run.add_argument("-v", "--verbose", action="store_true", help="list every step of passing scenarios too")
    run.add_argument("--keep-going", action="store_true", help="run the good files even if some are bad")
    run.add_argument("--list-steps", action="store_true", help="print every step kind and its parameters")
    run.add_argument("--tag", action="append", metavar="TAG[,TAG]",
                     help="only scenarios with one of these tags; !TAG leaves those out (repeatable)")
    run.add_argument("--shard", metavar="I/N", help="run the I-th of N shares of the files, sorted by name (CI)")
    run.add_argument("--keep-on-failure", action="store_true",
                     help="when a scenario fails keep its world up (prints the export lines) until Enter/Ctrl-C; "
                          "runs one at a time")
    run.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    run.set_defaults(func=_run)
    demo = sub.add_parser("demo", help="play the headline story with a readable timeline")
    demo.add_argument("--hmi", action="store_true",
                      help="play it for the browser: serve the virtual head unit and the world panel, print the URL")
    demo.add_argument("--hmi-host", default="127.0.0.1", help=argparse.SUPPRESS)
    demo.add_argument("--hmi-port", type=int, default=8765, metavar="PORT", help="port of the page (0: any free)")
    demo.add_argument("--pace", type=float, default=2.0, metavar="SECONDS",
                      help="with --hmi: pause before each narrated line (default 2)")
    demo.add_argument("--hmi-wait", type=float, default=120.0, metavar="SECONDS",
                      help="with --hmi: wait this long for a browser to open the page (default 120; 0: do not)")
    demo.set_defaults(func=_demo)
    conf = sub.add_parser("cloud-conformance", add_help=False,
                          help="run a car's expectations against a backend (see cloud-conformance --help)")
    conf.add_argument("rest", nargs=argparse.REMAINDER)
    conf.set_defaults(func=lambda a: _conformance(a.rest))
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        rc: int = args.func(args)
        return rc
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
