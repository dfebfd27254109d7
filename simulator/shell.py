"""``dashbridge-sim shell``: an interactive prompt to act as the world around the daemon.

The world (private buses, the fakes, the daemon) runs on an asyncio loop in a background thread;
the prompt (``cmd`` + ``readline``: history, tab completion of commands, phones, services and API
members, ``help <command>``) runs in the foreground and hands each command to that loop.  The
daemon's signals are printed as they happen, above the line being typed.

Type ``help`` for the commands.  Phones are named by their name or address (quote names with
spaces: ``pair "Alice's Pixel"``).
"""

from __future__ import annotations

import argparse
import asyncio
import cmd
import concurrent.futures
import shlex
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .phone import PROFILE_UUIDS, VirtualPhone
from .world import Event, World, WorldError, WorldSpec

try:
    import readline
except ImportError:  # pragma: no cover - no readline on this Python
    readline = None  # type: ignore[assignment]

T = TypeVar("T")
COMMAND_TIMEOUT_S = 60.0
HISTORY = Path.home() / ".dashbridge_sim_history"


class ShellError(Exception):
    """A command's problem, shown as one line."""


class LoopThread:
    """An asyncio loop in a daemon thread; ``run(coro)`` waits for its result from the prompt."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="world", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float | None = COMMAND_TIMEOUT_S) -> T:
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            if fut.done():
                raise  # the command's own deadline (it is the same exception class since 3.11)
            fut.cancel()
            raise ShellError(f"no result within {timeout:g}s") from None

    def submit(self, coro: Awaitable[T], done: Callable[[T | BaseException], None]) -> None:
        """Run in the background; ``done(result or exception)`` is called on the loop thread."""
        fut = asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop)

        def cb(f: concurrent.futures.Future[T]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            done(exc if exc is not None else f.result())

        fut.add_done_callback(cb)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


def _kv(args: list[str]) -> tuple[list[str], dict[str, str]]:
    pos, kw = [], {}
    for a in args:
        if "=" in a and not a.startswith("="):
            k, _, v = a.partition("=")
            kw[k] = v
        else:
            pos.append(a)
    return pos, kw


def _value(text: str) -> Any:
    """A command-line word as YAML (so 30, true, [a, b] and {x: 1} mean what they look like)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _show(value: Any) -> str:
    if not isinstance(value, dict | list):
        return f"  {value}"
    return "  " + yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip().replace("\n", "\n  ")


class SimShell(cmd.Cmd):
    intro = ("dashbridge simulator — you are the world around the daemon.  "
             "Type help for commands, help <command> for one; Tab completes.")
    prompt = "sim> "

    def __init__(self, loop: LoopThread, world: World) -> None:
        super().__init__()
        self.lt = loop
        self.world = world
        self._lock = threading.Lock()
        self._wait_mark: dict[str, int] = {}  # signal -> where the last `wait` for it matched
        if world.dashboard is not None:
            world.dashboard.on_event(self._on_event)

    # -- output ---------------------------------------------------------------------------------

    def emit(self, text: str) -> None:
        """Print above the line being typed (called from the loop thread)."""
        with self._lock:
            if sys.stdout.isatty() and readline is not None:
                buf = readline.get_line_buffer()
                sys.stdout.write("\r\x1b[K" + text + "\n" + self.prompt + buf)
            else:
                sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def _on_event(self, ev: Event) -> None:
        from .demo import describe

        text = describe(ev)
        if text:
            self.emit(f"  ⟵ {text}")

    def run(self, coro: Awaitable[T], timeout: float | None = COMMAND_TIMEOUT_S) -> T:
        return self.lt.run(coro, timeout)

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except ShellError as exc:
            print(f"error: {exc}")
        except WorldError as exc:
            print(f"error: {exc}")
        except (ValueError, KeyError) as exc:
            print(f"error: {exc.args[0] if exc.args else exc}")
        except Exception as exc:  # a bus error from the daemon, a fake's complaint ...
            print(f"error: {type(exc).__name__}: {exc}")
        return False

    def emptyline(self) -> bool:
        return False

    def default(self, line: str) -> None:
        print(f"unknown command {line.split()[0]!r}; type help")

    # -- completion helpers -----------------------------------------------------------------------

    def _phone_words(self) -> list[str]:
        out = []
        for p in self.world.phones.values():
            out.append(p.address)
            out.append(shlex.quote(p.name) if " " in p.name or "'" in p.name else p.name)
        return out

    def _complete_from(self, words: list[str], text: str) -> list[str]:
        return [w for w in words if w.lower().startswith(text.lower())]

    def _complete_phone_first(self, text: str, line: str, extra: list[str] | None = None) -> list[str]:
        nwords = len(line.split()) - (0 if line.endswith(" ") else 1)
        if nwords <= 1:
            return self._complete_from(self._phone_words(), text)
        return self._complete_from(extra or [], text)

    def _args(self, arg: str) -> list[str]:
        try:
            return shlex.split(arg)
        except ValueError as exc:
            raise ShellError(str(exc)) from None

    # =============================================================================================
    # the world
    # =============================================================================================

    def do_status(self, arg: str) -> None:
        """status — what is running in this world, and the environment to reach it."""
        w = self.world
        for name in w.fakes:
            print(f"  {name:<11} running")
        for name, why in w.missing.items():
            print(f"  {name:<11} not in this world ({why})")
        print(f"  {'daemon':<11} " + (f"running (pid {w.daemon.pid})" if w.daemon else "not running"))
        for k, v in w.env().items():
            print(f"  {k}={v}")

    def do_env(self, arg: str) -> None:
        """env — shell lines to point dashbridgectl (or your own daemon) at this world."""
        for k, v in self.world.env().items():
            print(f"export {k}='{v}'")

    def do_phones(self, arg: str) -> None:
        """phones — the phones in the world: in range? bonded (phone side)? paired/connected (car side)?"""
        if not self.world.phones:
            print("  no phones; add one with: add NAME ADDRESS")
        for p in self.world.phones.values():
            st = self.world.phone_state(p.address)
            flags = [("in range" if st["in_range"] else "OUT OF RANGE"), ("bonded" if st["bonded"] else "not bonded")]
            if "connected" in st:
                flags.append("connected" if st["connected"] else "disconnected")
            print(f"  {p.name:<20} {p.address}  {', '.join(flags)}  [{','.join(p.profiles)}] pairing={p.pairing}")

    def do_add(self, arg: str) -> None:
        """add NAME ADDRESS [profiles=hfp,pbap,map] [contacts=N|FILE.vcf] [pairing=numeric|legacy_pin|just_works]
        [passkey=123456] [pin=0000] [auto_reconnect=true] — put a phone in the world (in range, not paired)."""
        pos, kw = _kv(self._args(arg))
        if len(pos) != 2:
            raise ShellError("usage: add NAME ADDRESS [key=value ...]  (see help add)")
        fields: dict[str, Any] = {"name": pos[0], "address": pos[1]}
        for k, v in kw.items():
            if k == "profiles":
                profs = tuple(x for x in v.split(",") if x)
                bad = [x for x in profs if x not in PROFILE_UUIDS]
                if bad:
                    raise ShellError(f"unknown profile {bad[0]} (known: {', '.join(PROFILE_UUIDS)})")
                fields["profiles"] = profs
            elif k == "contacts":
                if v.isdigit():
                    fields["generated_contacts"] = int(v)
                elif Path(v).is_file():
                    fields["contacts_vcf"] = str(Path(v).resolve())
                else:
                    raise ShellError(f"contacts={v}: expected a number or an existing .vcf file")
            elif k in ("pairing", "pin", "name", "operator"):
                fields[k] = v
            elif k in ("passkey", "battery", "signal", "rssi"):
                fields[k] = int(v)
            elif k in ("auto_reconnect", "discoverable", "map_notifications"):
                fields[k] = v.lower() in ("1", "true", "yes", "on")
            else:
                raise ShellError(f"unknown option {k} (see help add)")
        try:
            phone = VirtualPhone(**fields)
        except TypeError as exc:
            raise ShellError(str(exc)) from None
        self.run(self.world.add_phone(phone))
        print(f"  {phone.name} ({phone.address}) is in the world, in range")

    def complete_add(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_from(["profiles=", "contacts=", "pairing=", "passkey=", "pin=", "auto_reconnect="],
                                   text)

    def do_range(self, arg: str) -> None:
        """range PHONE in|out — the phone comes into / leaves radio range."""
        a = self._args(arg)
        if len(a) != 2 or a[1] not in ("in", "out"):
            raise ShellError("usage: range PHONE in|out")
        self.run(self.world.set_in_range(a[0], a[1] == "in"))

    def complete_range(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_phone_first(text, line, ["in", "out"])

    def do_pair(self, arg: str) -> None:
        """pair PHONE [PASSKEY] — the phone starts pairing with the car (the car must be in its pairing
        window, or already know the phone).  Answer the dashboard's prompt with:
        call Phones1.<answer method> ...; the outcome for the phone is printed when pairing ends."""
        a = self._args(arg)
        if not 1 <= len(a) <= 2:
            raise ShellError("usage: pair PHONE [PASSKEY]")
        phone = self.world.phone(a[0])
        passkey = int(a[1]) if len(a) == 2 else None

        def done(r: object) -> None:
            self.emit(f"  phone {phone.name}: pairing ended: {r}")

        self.lt.submit(self.world.phone_pair(phone.address, passkey), done)
        print(f"  {phone.name} asks the car to pair ...")

    def complete_pair(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_phone_first(text, line)

    def do_reject(self, arg: str) -> None:
        """reject PHONE — the user will tap Cancel on the phone's next pairing dialog (accept PHONE undoes)."""
        self.world.phone_accepts_pairing(self._one(arg, "reject PHONE"), False)

    def do_accept(self, arg: str) -> None:
        """accept PHONE — the user will tap Pair on the phone's pairing dialog (the default)."""
        self.world.phone_accepts_pairing(self._one(arg, "accept PHONE"), True)

    def do_connect(self, arg: str) -> None:
        """connect PHONE — the phone connects to the car by itself."""
        ok = self.run(self.world.phone_connect(self._one(arg, "connect PHONE")))
        print("  connected" if ok else "  the car did not accept any profile")

    def do_disconnect(self, arg: str) -> None:
        """disconnect PHONE — the phone drops the link (Bluetooth switched off on the phone)."""
        self.run(self.world.phone_disconnect(self._one(arg, "disconnect PHONE")))

    def do_forget_car(self, arg: str) -> None:
        """forget_car PHONE — the user removes the car from the phone (the car's key stops working)."""
        self.world.phone_forgets_car(self._one(arg, "forget_car PHONE"))

    complete_reject = complete_accept = complete_connect = complete_disconnect = complete_forget_car = \
        complete_pair

    def _one(self, arg: str, usage: str) -> str:
        a = self._args(arg)
        if len(a) != 1:
            raise ShellError(f"usage: {usage}")
        return self.world.phone(a[0]).address

    def do_sms(self, arg: str) -> None:
        """sms PHONE FROM TEXT... — a text message reaches the phone (FROM: a number; name=NAME optional)."""
        pos, kw = _kv(self._args(arg))
        if len(pos) < 3:
            raise ShellError("usage: sms PHONE FROM TEXT...  [name=SENDER_NAME]")
        self.world.deliver_message(pos[0], "SMS_GSM", pos[1], " ".join(pos[2:]), sender_name=kw.get("name", ""))
        print("  delivered to the phone")

    def do_email(self, arg: str) -> None:
        """email PHONE FROM SUBJECT TEXT... — an e-mail reaches the phone (quote the subject if it has spaces)."""
        pos, kw = _kv(self._args(arg))
        if len(pos) < 4:
            raise ShellError('usage: email PHONE FROM "SUBJECT" TEXT...  [name=SENDER_NAME]')
        self.world.deliver_message(pos[0], "EMAIL", pos[1], " ".join(pos[3:]), subject=pos[2],
                                   sender_name=kw.get("name", ""))
        print("  delivered to the phone")

    complete_sms = complete_email = complete_pair

    def do_ring(self, arg: str) -> None:
        """ring PHONE NUMBER [NAME] — a call comes in to the phone (during a call: it waits).
        NAME: the caller name the network sends (the car prefers the phone's contacts)."""
        a = self._args(arg)
        if len(a) not in (2, 3):
            raise ShellError("usage: ring PHONE NUMBER [NAME]")
        phone = self.world.phone(a[0])
        self.world.fake("ofono").incoming_call(phone.address, a[1], a[2] if len(a) == 3 else "")
        print(f"  {phone.name} rings")

    def do_remote(self, arg: str) -> None:
        """remote PHONE answer|alerting|hangup — the other party of the phone's call answers, starts
        ringing, or hangs up."""
        a = self._args(arg)
        acts = {"answer": "remote_answer", "alerting": "remote_alerting", "hangup": "remote_hangup"}
        if len(a) != 2 or a[1] not in acts:
            raise ShellError("usage: remote PHONE answer|alerting|hangup")
        getattr(self.world.fake("ofono"), acts[a[1]])(self.world.phone(a[0]).address)

    def complete_remote(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_phone_first(text, line, ["answer", "alerting", "hangup"])

    def do_contacts(self, arg: str) -> None:
        """contacts PHONE allow|pending|deny — the user answers the phone's "allow access to contacts?"."""
        a = self._args(arg)
        states = {"allow": "granted", "pending": "pending", "deny": "denied"}
        if len(a) != 2 or a[1] not in states:
            raise ShellError("usage: contacts PHONE allow|pending|deny")
        from .obex_pbap import set_permission

        set_permission(self.world.fake("obexd"), self.world.phone(a[0]).address, states[a[1]])

    def complete_contacts(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_phone_first(text, line, ["allow", "pending", "deny"])

    complete_ring = complete_pair

    def do_backend(self, arg: str) -> None:
        """backend offline|online|blackhole [old|new] | migrate migrating|migrated | approve | state —
        the carmaker's backend: take its address offline (or back), migrate it to a new address,
        approve a pending registration, or show what it holds."""
        a = self._args(arg)
        b = self.world.fake("backend")
        if not a:
            raise ShellError("usage: backend offline|online|blackhole [old|new] | migrate PHASE | approve | state")
        if a[0] in ("offline", "online", "blackhole"):
            addr = a[1] if len(a) > 1 else "old"
            if addr not in ("old", "new"):
                raise ShellError("the address is old or new")
            self.run(b.set_listener(addr, "up" if a[0] == "online" else a[0]))
            print(f"  backend {addr} address: {a[0]}")
        elif a[0] == "migrate" and len(a) == 2 and a[1] in ("migrating", "migrated"):
            self.run(b.migrate(a[1]))
            print(f"  backend {a[1]} (new address {b.new.base})")
        elif a[0] == "approve":
            b.approve(self.world.vehicle_id)
        elif a[0] == "state":
            v = b.vehicles[self.world.vehicle_id]
            print(f"  phase {b.phase}; old address {b.old.mode}, new {b.new.mode}; registration {v.registration}; "
                  f"{len(b.log)} requests, {len(b.effects)} effects")
        else:
            raise ShellError("usage: backend offline|online|blackhole [old|new] | migrate migrating|migrated | "
                             "approve | state")

    def complete_backend(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line.split()
        if len(words) >= 2 and words[1] == "migrate":
            return self._complete_from(["migrating", "migrated"], text)
        if len(words) >= 2 and words[1] in ("offline", "online", "blackhole"):
            return self._complete_from(["old", "new"], text)
        return self._complete_from(["offline", "online", "blackhole", "migrate", "approve", "state"], text)

    def do_advance(self, arg: str) -> None:
        """advance DURATION — simulated time passes for the cloud (e.g. advance 3w): leases, grace,
        retries and syncs become due at once."""
        from dashbridge.daemon.config import parse_duration

        try:
            seconds = parse_duration(arg.strip())
        except ValueError:
            raise ShellError("usage: advance DURATION (e.g. 90m, 3d, 3w)") from None
        self.run(self.world.advance(seconds))
        print(f"  simulated time is now {seconds:g}s further on")

    def do_prompt(self, arg: str) -> None:
        """prompt yes|no [VALUE] — answer the latest pairing prompt the dashboard was shown, as the
        driver would (VALUE: the PIN or passkey typed)."""
        a = self._args(arg)
        if not a or a[0] not in ("yes", "no"):
            raise ShellError("usage: prompt yes|no [VALUE]")
        dash = self._dash()
        open_: dict[int, str] = {}
        for ev in dash.events:
            if ev.member == "PromptRequested":
                open_[int(ev.named["prompt"])] = ev.named.get("kind", "")
            elif ev.member == "PromptCancelled":
                open_.pop(int(ev.named["prompt"]), None)
        if not open_:
            raise ShellError("no pairing prompt is open")
        prompt = max(open_)
        self.run(dash.call("Phones1.AnswerPrompt", [prompt, a[0] == "yes", a[1] if len(a) > 1 else ""]))

    def complete_prompt(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_from(["yes", "no"], text)

    def do_wait(self, arg: str) -> None:
        """wait Interface.Signal [SECONDS] — until the daemon sends that signal (default 10 s); for
        scripts piped into the shell."""
        a = self._args(arg)
        if not 1 <= len(a) <= 2:
            raise ShellError("usage: wait Interface.Signal [SECONDS]")
        dash = self._dash()
        m = dash.api.resolve(a[0], "signal")
        timeout = float(a[1]) if len(a) == 2 else 10.0
        since = self._wait_mark.get(m.name, 0)
        try:
            ev = self.run(dash.wait_for(lambda e: e.interface == m.interface and e.member == m.name, timeout,
                                        since=since), timeout=timeout + 5)
        except TimeoutError:
            raise ShellError(f"no {a[0]} within {timeout:g}s") from None
        self._wait_mark[m.name] = ev.seq + 1
        print(f"  got {ev.describe()}")

    def complete_wait(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_from(self._members("signal"), text)

    def do_restart(self, arg: str) -> None:
        """restart bluetoothd|obexd|ofono|daemon — the service restarts (the name drops, its objects go,
        then it comes back); the daemon is stopped with SIGTERM and started on the same state."""
        a = self._args(arg)
        if len(a) != 1 or a[0] not in World.RESTARTABLE:
            raise ShellError(f"usage: restart {'|'.join(World.RESTARTABLE)}")
        self.run(self.world.restart(a[0]))
        print(f"  {a[0]} restarted")

    def complete_restart(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_from(list(World.RESTARTABLE), text)

    # =============================================================================================
    # the dashboard (the public API)
    # =============================================================================================

    def do_call(self, arg: str) -> None:
        """call Interface.Method [ARG ...] — call the daemon as the dashboard does, e.g.
        call Daemon1.Ping.  Arguments are read as YAML (30, true, "text", [a, b])."""
        a = self._args(arg)
        if not a:
            raise ShellError("usage: call Interface.Method [ARG ...]")
        dash = self._dash()
        result = self.run(dash.call(a[0], [_value(x) for x in a[1:]]))
        if result is not None:
            print(_show(result))

    def complete_call(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_from(self._members("method"), text)

    def do_get(self, arg: str) -> None:
        """get Interface.Property | get Interface — read a property (or all of an interface's) from the daemon."""
        a = self._args(arg)
        if len(a) != 1:
            raise ShellError("usage: get Interface.Property | get Interface")
        dash = self._dash()
        if "." in a[0].removeprefix("org.dashbridge."):
            value: Any = self.run(dash.get(a[0]))
        else:
            value = self.run(dash.get_all(a[0]))
        print(_show(value))

    def complete_get(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        ifaces = [i.removeprefix("org.dashbridge.") for i in self._dash().api.interfaces()]
        return self._complete_from([*ifaces, *self._members("property")], text)

    def do_events(self, arg: str) -> None:
        """events [N] — the last N signals the daemon sent (default 20)."""
        n = int(arg) if arg.strip().isdigit() else 20
        for ev in self._dash().events[-n:]:
            print(f"  +{ev.at - self.world.t0:7.2f}s {ev.describe(200)}")

    def _members(self, kind: str) -> list[str]:
        out: list[str] = []
        for iface, table in self._dash().api.members.items():
            short = iface.removeprefix("org.dashbridge.")
            out.extend(f"{short}.{n}" for n, m in table.items() if m.kind == kind)
        return sorted(out)

    def _dash(self) -> Any:
        if self.world.dashboard is None:
            raise ShellError("no dashboard connection")
        return self.world.dashboard

    # =============================================================================================

    def do_quit(self, arg: str) -> bool:
        """quit — stop everything (the daemon, the fakes, the buses) and leave."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        print()
        return True


def main(args: argparse.Namespace | None = None) -> int:
    spec = WorldSpec(daemon=not getattr(args, "no_daemon", False))
    if args is not None:
        from .worldargs import world_spec

        got = world_spec(args)
        if got is None:
            return 2
        spec = got
    lt = LoopThread()
    world = World(spec)
    try:
        try:
            lt.run(world.start(), timeout=None)
        except WorldError as exc:
            print(f"dashbridge-sim shell: {exc}", file=sys.stderr)
            return 1
        if readline is not None:
            readline.set_completer_delims(" \t\n")
            try:
                readline.read_history_file(HISTORY)
            except OSError:
                pass
        shell = SimShell(lt, world)
        shell.do_status("")
        while True:
            try:
                shell.cmdloop()
                break
            except KeyboardInterrupt:
                print("^C (quit or Ctrl-D to leave)")
                shell.intro = ""
        return 0
    finally:
        if readline is not None:
            try:
                readline.write_history_file(HISTORY)
            except OSError:
                pass
        try:
            lt.run(world.stop(), timeout=30)
        finally:
            lt.close()
        print("everything stopped")
