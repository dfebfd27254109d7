"""``dashbridge-sim shell``: an interactive prompt to act as the world around the daemon.

The world (private buses, the fakes, the daemon) runs on an asyncio loop; the prompt (``cmd`` +
``readline``: history, tab completion of commands, phones, services and API members, ``help
<command>``) runs in another thread and hands everything it does to the world — every action and
every look at the world's state — to that loop (``LoopRef.run``/``LoopRef.call``, under a
deadline).  The daemon's signals are printed whole as they happen, above the line being typed.

When ``dashbridge-sim up`` is running, ``shell`` joins its world (``simulator/worldshare.py``): the
commands then run in the ``up`` process, on its loop, and only their output comes back.  With no
``up`` running (or ``--new``) the shell starts a world of its own and stops it on ``quit``.

Type ``help`` for the commands.  Phones are named by their name or address (quote names with
spaces: ``pair "Alice's Pixel"``).
"""

from __future__ import annotations

import argparse
import asyncio
import cmd
import concurrent.futures
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, TextIO, TypeVar

import yaml

from .phone import PROFILE_UUIDS, VirtualPhone
from .world import Event, World, WorldError

try:
    import readline
except ImportError:  # pragma: no cover - no readline on this Python
    readline = None  # type: ignore[assignment]

T = TypeVar("T")
COMMAND_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 10.0  # a look at the world's state, or a quick action on it
HISTORY = Path.home() / ".dashbridge_sim_history"
# Commands that only look: they do not move the mark ``wait`` counts signals from.
LOOKING = frozenset({"", "wait", "events", "status", "env", "phones", "help", "?", "get", "log"})
# What a phone's pairing outcome means for the person at the shell.
PAIR_HINTS = {
    "not_found": "the car is not discoverable and does not know this phone: open the pairing window "
                 "first (window [SECONDS]), then pair again",
    "no_agent": "the daemon has no pairing agent on bluetoothd (is it running? see status and log)",
    "phone_rejected": "the phone's user tapped Cancel (accept PHONE undoes reject PHONE)",
    "rejected": "the car refused (the driver said no, or the prompt was not answered in time)",
    "timeout": "nobody answered in time (answer the dashboard's prompt with: prompt yes|no)",
}


class ShellError(Exception):
    """A command's problem, shown as one line."""


class LoopRef:
    """The world's loop, seen from another thread: ``run(coro)`` and ``call(fn)`` wait for the
    result under a deadline; ``submit(coro, done)`` runs in the background."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._current: set[concurrent.futures.Future[Any]] = set()

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def run(self, coro: Awaitable[T], timeout: float | None = COMMAND_TIMEOUT_S) -> T:
        if self._on_loop():
            raise RuntimeError("LoopRef.run called on the world's own loop (it would wait for itself)")
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop)
        self._current.add(fut)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            if fut.done() and not fut.cancelled():
                raise  # the command's own deadline (it is the same exception class since 3.11)
            fut.cancel()
            raise ShellError(f"no result within {timeout:g}s") from None
        except concurrent.futures.CancelledError:
            raise ShellError("interrupted") from None
        except KeyboardInterrupt:
            fut.cancel()
            raise
        finally:
            self._current.discard(fut)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = CALL_TIMEOUT_S, **kw: Any) -> T:
        """``fn(*args, **kw)`` on the world's loop (directly when already on it)."""
        if self._on_loop():
            return fn(*args, **kw)

        async def on_loop() -> T:
            return fn(*args, **kw)

        return self.run(on_loop(), timeout)

    def submit(self, coro: Awaitable[T], done: Callable[[T | BaseException], None]) -> None:
        """Run in the background; ``done(result or exception)`` is called on the loop thread."""
        fut = asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop)

        def cb(f: concurrent.futures.Future[T]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            done(exc if exc is not None else f.result())

        fut.add_done_callback(cb)

    def interrupt(self) -> None:
        """Cancel what the command thread is waiting for (it then says "interrupted")."""
        for fut in list(self._current):
            fut.cancel()


class LoopThread(LoopRef):
    """An asyncio loop of its own in a daemon thread (a shell with its own world)."""

    def __init__(self) -> None:
        super().__init__(asyncio.new_event_loop())
        self.thread = threading.Thread(target=self.loop.run_forever, name="world", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


# -- words --------------------------------------------------------------------------------------


class Word(str):
    """A command-line word; ``quoted``: some of it was in quotes (so it is text, never a number)."""

    quoted: bool = False


def split_words(text: str) -> list[Word]:
    """Split like a POSIX shell (``'...'``, ``"..."`` with ``\\"``, ``\\`` outside quotes) and
    remember which words were quoted."""
    words: list[Word] = []
    cur: list[str] = []
    in_word = quoted = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            if in_word:
                w = Word("".join(cur))
                w.quoted = quoted
                words.append(w)
                cur, in_word, quoted = [], False, False
            i += 1
            continue
        in_word = True
        if c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise ShellError("no closing quotation")
            cur.append(text[i + 1:j])
            quoted, i = True, j + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise ShellError("no closing quotation")
                c = text[i]
                if c == '"':
                    break
                if c == "\\" and i + 1 < n and text[i + 1] in '"\\$`':
                    i += 1
                    c = text[i]
                cur.append(c)
                i += 1
            quoted, i = True, i + 1
        elif c == "\\" and i + 1 < n:
            cur.append(text[i + 1])
            i += 2
        else:
            cur.append(c)
            i += 1
    if in_word:
        w = Word("".join(cur))
        w.quoted = quoted
        words.append(w)
    return words


def _kv(args: list[Word]) -> tuple[list[Word], dict[str, str]]:
    pos, kw = [], {}
    for a in args:
        if "=" in a and not a.startswith("="):
            k, _, v = a.partition("=")
            kw[k] = v
        else:
            pos.append(a)
    return pos, kw


def _value(word: str) -> Any:
    """A command-line word as YAML (so 30, true, [a, b] and {x: 1} mean what they look like) —
    except a quoted word ('+4420', "30"), which is text unless it is a list or mapping, and a
    word starting with + (a phone number), which is text too."""
    if getattr(word, "quoted", False) and not word.lstrip().startswith(("[", "{")):
        return str(word)
    if word.startswith("+"):
        return str(word)
    try:
        return yaml.safe_load(word)
    except yaml.YAMLError:
        return str(word)


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _show(value: Any) -> str:
    if not isinstance(value, dict | list):
        return f"  {value}"
    return "  " + yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip().replace("\n", "\n  ")


_UNITS = (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def human_duration(seconds: float) -> str:
    """``3w``, ``21d`` … ``1d 2h 30m``, ``90s``, ``250ms``: how a person writes it."""
    if seconds <= 0:
        return "0s"
    for unit, size in _UNITS[:-1]:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    parts, rest = [], seconds
    for unit, size in _UNITS[:-1]:
        if rest >= size:
            k = int(rest // size)
            parts.append(f"{k}{unit}")
            rest -= k * size
    if rest:
        parts.append(f"{rest:g}s")
    return " ".join(parts)


def signal_line(ev: Event) -> str | None:
    """A daemon signal, whole (None: the daemon's own property chatter)."""
    if ev.member == "PropertiesChanged":
        if ev.interface == "org.dashbridge.Daemon1":
            return None
        changed = ", ".join(f"{k}={v}" for k, v in ev.named.get("changed", {}).items())
        return f"{ev.interface.removeprefix('org.dashbridge.')}: {changed}" if changed else None
    return f"{ev.short}: " + ", ".join(f"{k}={v}" for k, v in ev.named.items())


def print_above_prompt(out: IO[str], text: str, prompt: str | None) -> None:
    """Write a line; while the user is at the prompt, above the line being typed, the prompt drawn
    again after it.  What was typed is drawn again only on the prompt's own (main) thread: from any
    other thread, reading readline's line buffer races with readline changing it as keys arrive
    (it runs without the GIL), and glibc aborts the shell decoding a half-changed buffer (seen on a
    loaded machine: "__mbsrtowcs_l: Assertion ... failed" after a signal line met a typed "quit").
    There the typed text is left for readline, which still holds it and acts on it."""
    if prompt is not None and out.isatty() and readline is not None:
        buf = readline.get_line_buffer() if threading.current_thread() is threading.main_thread() else ""
        out.write("\r\x1b[K" + text + "\n" + prompt + buf)
    else:
        out.write(text + "\n")
    out.flush()


def tail(path: Path | None, n: int) -> list[str]:
    if path is None:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max(4096, 400 * n)))
            data = f.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-n:] if n > 0 else []


class SimShell(cmd.Cmd):
    """The commands.  Runs on a thread that is not the world's loop (the prompt thread of a shell
    with its own world; a worker thread of ``dashbridge-sim up`` for a joined shell); everything
    that touches the world goes to the loop through ``self.run``/``self.call``."""

    intro = ("dashbridge simulator — you are the world around the daemon.  "
             "Type help for commands, help <command> for one; Tab completes.")
    prompt = "sim> "

    def __init__(self, loop: LoopRef, world: World, *, stdout: TextIO | None = None,
                 emit: Callable[[str], None] | None = None, joined: bool = False) -> None:
        super().__init__(stdout=stdout)
        self.lt = loop
        self.world = world
        self.joined = joined  # the world belongs to `dashbridge-sim up`, not to this shell
        self._lock = threading.Lock()
        self._emit = emit
        self.at_prompt = True
        self._action_mark = 0  # where the dashboard's event log was when the last action began
        self._matches: list[str] = []  # Tab's candidates
        self._wait_mark: dict[str, int] = {}  # signal -> just after where the last `wait` for it matched
        self.recorder: Any = None  # a scenario.Recorder with --record: what was done, as a scenario

    # -- attaching to the world's signals (on the loop) -------------------------------------------

    def attach(self) -> None:
        """Follow the daemon's signals; call on the world's loop.  A joined shell's ``wait`` counts
        signals from now on; a shell's own world is new, all its signals count."""
        if self.world.dashboard is not None:
            self.world.dashboard.on_event(self._on_event)
            self._action_mark = self.world.dashboard.mark if self.joined else 0

    def detach(self) -> None:
        if self.world.dashboard is not None:
            self.world.dashboard.off_event(self._on_event)

    # -- output ---------------------------------------------------------------------------------

    def out(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def emit(self, text: str) -> None:
        """A line that is not a command's answer (a signal, a pairing outcome), from any thread."""
        if self._emit is not None:
            self._emit(text)
            return
        with self._lock:
            print_above_prompt(self.stdout, text, self.prompt if self.at_prompt else None)

    def _on_event(self, ev: Event) -> None:
        text = signal_line(ev)
        if text:
            self.emit(f"  ⟵ {text}")

    def run(self, coro: Awaitable[T], timeout: float | None = COMMAND_TIMEOUT_S) -> T:
        return self.lt.run(coro, timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return self.lt.call(fn, *args, **kw)

    def interrupt(self) -> None:
        self.lt.interrupt()

    def onecmd(self, line: str) -> bool:
        self.at_prompt = False
        try:
            name = self.parseline(line)[0] or ""
            if name not in LOOKING and hasattr(self, "do_" + name) and self.world.dashboard is not None:
                dash = self.world.dashboard
                self._action_mark = self.call(lambda: dash.mark)
            stop = super().onecmd(line)
            if self.recorder is not None and name and name not in LOOKING:
                self._record(name, self.parseline(line)[1] or "")
            return stop
        except ShellError as exc:
            self.out(f"error: {exc}")
        except WorldError as exc:
            self.out(f"error: {exc}")
        except (ValueError, KeyError) as exc:
            self.out(f"error: {exc.args[0] if exc.args else exc}")
        except Exception as exc:  # a bus error from the daemon, a fake's complaint ...
            self.out(f"error: {type(exc).__name__}: {exc}")
        finally:
            self.at_prompt = True
        return False

    def emptyline(self) -> bool:
        return False

    def default(self, line: str) -> None:
        self.out(f"unknown command {line.split()[0]!r}; type help")

    def get_names(self) -> list[str]:
        # do_EOF is how Ctrl-D arrives, not a command to list in help
        return [n for n in super().get_names() if n != "do_EOF"]

    # -- recording (--record FILE.yaml) -------------------------------------------------------------

    def _phone_id(self, ref: str) -> str:
        from .scenario.recorder import phone_id

        return phone_id(self.call(self.world.phone, ref))

    def _steps_for(self, name: str, arg: str) -> list[dict[str, Any]]:
        """The scenario steps a shell command that succeeded stands for (none: nothing to replay)."""
        a = self._args(arg)
        pos, kw = _kv(a)
        if name == "add":
            from .scenario.recorder import phone_dict

            phone = self.call(self.world.phone, str(pos[1]))
            self.recorder.add_phone(phone_dict(phone))
            return []
        if name == "window":
            return [{"dashboard": "close_pairing_window"}] if a == ["close"] else \
                [{"dashboard": "open_pairing_window", **({"seconds": int(a[0])} if a else {})}]
        if name == "prompt":
            # The driver answers a prompt they saw: the replay waits for it first.
            return [{"expect_signal": "Phones1.PromptRequested"},
                    {"dashboard": "answer_prompt", "accept": a[0] == "yes",
                     **({"value": str(a[1])} if len(a) > 1 else {})}]
        if name == "advance":
            return [{"advance": arg.strip()}]
        if name == "wait":
            return [{"expect_signal": str(a[0]), **({"within": f"{float(a[1]):g}s"} if len(a) > 1 else {})}]
        if name == "restart":
            fake = {"bluetoothd": "bluez", "obexd": "obexd", "ofono": "ofono", "daemon": "daemon"}[str(a[0])]
            return [{fake: "restart"}]
        if name == "backend":
            if a[0] in ("offline", "online", "blackhole"):
                return [{"backend": str(a[0]), **({"address": str(a[1])} if len(a) > 1 else {})}]
            if a[0] == "migrate":
                return [{"backend": "migrate", "phase": str(a[1])}]
            if a[0] == "approve":
                return [{"backend": "approve"}]
            return []
        if name == "call":
            args = {"args": [_value(x) for x in a[1:]]} if a[1:] else {}
            return [{"dashboard": "call", "method": str(a[0]), **args}]
        phone_steps = {"pair": "pair", "connect": "connect", "disconnect": "disconnect", "forget_car": "forget_car"}
        if name in phone_steps:
            return [{"phone": self._phone_id(a[0]), "do": phone_steps[name]}]
        if name == "range":
            return [{"phone": self._phone_id(a[0]), "do": "in_range" if a[1] == "in" else "out_of_range"}]
        if name == "sms":
            return [{"phone": self._phone_id(pos[0]), "do": "receive_sms", "sender": str(pos[1]),
                     "text": " ".join(pos[2:]), **({"name": kw["name"]} if "name" in kw else {})}]
        if name == "email":
            named = {"name": kw["name"]} if "name" in kw else {}
            return [{"phone": self._phone_id(pos[0]), "do": "receive_email", "sender": str(pos[1]),
                     "subject": str(pos[2]), "text": " ".join(pos[3:]), **named}]
        if name == "ring":
            return [{"phone": self._phone_id(a[0]), "do": "ring", "number": str(a[1]),
                     **({"name": str(a[2])} if len(a) > 2 else {})}]
        if name == "remote":
            return [{"phone": self._phone_id(a[0]), "do": f"remote_{a[1]}"}]
        if name == "le_connect":
            return [{"phone": self._phone_id(a[0]), "do": "le_connect"}]
        if name == "companion":
            return self._companion_steps(a)
        return []

    def _companion_steps(self, a: list[Word]) -> list[dict[str, Any]]:
        pid, verb, rest = self._phone_id(a[0]), str(a[1]), [str(x) for x in a[2:]]
        opts: dict[str, Any] = {}
        pos: list[str] = []
        i = 0
        while i < len(rest):
            if rest[i] in ("--address", "--id", "--version", "--vehicle"):
                opts[rest[i][2:]] = rest[i + 1]
                i += 2
            elif rest[i] in ("--forged", "--expired", "--empty"):
                opts[rest[i][2:]] = True
                i += 1
            else:
                pos.append(rest[i])
                i += 1
        if verb == "send-destination":
            step: dict[str, Any] = {"phone": pid, "do": "companion_send_destination", "label": pos[0]}
            if len(pos) == 3:
                step.update(lat=float(pos[1]), lon=float(pos[2]))
            for k in ("address", "id"):
                if k in opts:
                    step[k] = opts[k]
            return [step]
        if verb == "lease":
            step = {"phone": pid, "do": "companion_lease"}
            if "version" in opts:
                step["version"] = int(opts["version"])
            for k in ("vehicle", "forged", "expired", "empty"):
                if k in opts:
                    step[k] = opts[k]
            return [step]
        if verb in ("start", "stop"):
            return [{"phone": pid, "do": "companion_app", "running": verb == "start"}]
        return []

    def _record(self, name: str, arg: str) -> None:
        from .scenario.schema import ScenarioError

        try:
            steps = self._steps_for(name, arg)
        except (IndexError, KeyError, ValueError):
            return  # the command failed its own checks: nothing happened, nothing to record
        for step in steps:
            try:
                self.recorder.record(step)
            except ScenarioError as exc:
                self.out(f"  (not recorded: {exc})")

    # -- completion helpers -----------------------------------------------------------------------

    def completions(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        """What Tab offers (cmd.Cmd.complete without readline); call on the world's loop."""
        stripped = len(line) - len(line.lstrip())
        begidx, endidx = begidx - stripped, endidx - stripped
        line = line.lstrip()
        if begidx > 0:
            name, _args, _ = self.parseline(line)
            fn = self.completedefault if not name else getattr(self, "complete_" + name, self.completedefault)
            return list(fn(text, line, begidx, endidx) or [])
        return self.completenames(text, line, begidx, endidx)

    def complete(self, text: str, state: int) -> str | None:  # type: ignore[override]  # typeshed is wrong
        if state == 0:
            assert readline is not None
            line, beg, end = readline.get_line_buffer(), readline.get_begidx(), readline.get_endidx()
            try:
                self._matches = self.call(self.completions, text, line, beg, end, timeout=2.0)
            except Exception:
                self._matches = []
        try:
            return self._matches[state]
        except IndexError:
            return None

    def _phone_words(self) -> list[str]:
        out = []
        for p in self.world.phones.values():
            out.append(p.address)
            out.append(f'"{p.name}"' if " " in p.name or "'" in p.name else p.name)
        return out

    def _complete_from(self, words: list[str], text: str) -> list[str]:
        return [w for w in words if w.lower().startswith(text.lower())]

    def _complete_phone_first(self, text: str, line: str, extra: list[str] | None = None) -> list[str]:
        nwords = len(line.split()) - (0 if line.endswith(" ") else 1)
        if nwords <= 1:
            return self._complete_from(self._phone_words(), text)
        return self._complete_from(extra or [], text)

    def _args(self, arg: str) -> list[Word]:
        return split_words(arg)

    def _phone(self, ref: str) -> VirtualPhone:
        return self.call(self.world.phone, ref)

    # =============================================================================================
    # the world
    # =============================================================================================

    def do_status(self, arg: str) -> None:
        """status — what is running in this world, the daemon's log, and the environment to reach it
        (export lines, ready to paste into another terminal)."""
        from .worldargs import developer_env, export_line

        def look() -> list[str]:
            w = self.world
            lines = [f"  {name:<11} running" for name in w.fakes]
            lines += [f"  {name:<11} not in this world ({why})" for name, why in w.missing.items()]
            if w.daemon is not None:
                lines.append(f"  {'daemon':<11} running (pid {w.daemon.pid}, log {w.daemon.log_path})")
            else:
                lines.append(f"  {'daemon':<11} not running")
            lines += [f"  {export_line(k, v)}" for k, v in developer_env(w).items()]
            return lines

        for line in self.call(look):
            self.out(line)
        if self.joined:
            self.out("  (the world of dashbridge-sim up: quit leaves it running)")

    def do_env(self, arg: str) -> None:
        """env — shell lines to point dashbridgectl (or your own daemon) at this world."""
        from .worldargs import developer_env, export_line

        for k, v in self.call(developer_env, self.world).items():
            self.out(export_line(k, v))

    def do_log(self, arg: str) -> None:
        """log [N] — the last N lines of the daemon's log (default 20)."""
        a = arg.strip()
        if a and not a.isdigit():
            raise ShellError("usage: log [N]")
        n = int(a) if a else 20

        def where() -> tuple[Path | None, str]:
            d = self.world.daemon
            return (d.log_path, "") if d is not None else (None, self.world.daemon_log)

        path, kept = self.call(where)
        if path is None:
            lines = kept.splitlines()[-n:] if n else []
            if not lines:
                raise ShellError("the daemon is not running in this world (and has not been)")
            self.out("  (the daemon is not running; its last log:)")
        else:
            lines = tail(path, n)
            self.out(f"  {path}:")
        for line in lines:
            self.out(f"  {line}")

    def do_phones(self, arg: str) -> None:
        """phones — the phones in the world: in range? bonded (phone side)? paired/connected (car side)?"""

        def look() -> list[str]:
            if not self.world.phones:
                return ["  no phones; add one with: add NAME ADDRESS"]
            lines = []
            for p in self.world.phones.values():
                st = self.world.phone_state(p.address)
                flags = [("in range" if st["in_range"] else "OUT OF RANGE"),
                         ("bonded" if st["bonded"] else "not bonded")]
                if "connected" in st:
                    flags.append("connected" if st["connected"] else "disconnected")
                lines.append(f"  {p.name:<20} {p.address}  {', '.join(flags)}  [{','.join(p.profiles)}] "
                             f"pairing={p.pairing}")
            return lines

        for line in self.call(look):
            self.out(line)

    def do_add(self, arg: str) -> None:
        """add NAME ADDRESS [profiles=hfp,pbap,map] [contacts=N|FILE.vcf] [history=FILE|DIR] [messages=FILE|DIR]
        [pairing=numeric|legacy_pin|just_works] [passkey=123456] [pin=0000] [auto_reconnect=true] — put a
        phone in the world (in range, not paired); history: call-history vCards (ich/och/mch/cch),
        messages: a YAML/JSON list or a directory of bMessages (a real phone's dump)."""
        pos, kw = _kv(self._args(arg))
        if len(pos) != 2:
            raise ShellError("usage: add NAME ADDRESS [key=value ...]  (see help add)")
        fields: dict[str, Any] = {"name": str(pos[0]), "address": str(pos[1])}
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
            elif k in ("history", "messages"):
                if not Path(v).exists():
                    raise ShellError(f"{k}={v}: no such file or directory")
                fields[f"{k}_from"] = str(Path(v).resolve())
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
        self.out(f"  {phone.name} ({phone.address}) is in the world, in range")

    def complete_add(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_from(["profiles=", "contacts=", "history=", "messages=", "pairing=", "passkey=", "pin=",
                                    "auto_reconnect="], text)

    def do_range(self, arg: str) -> None:
        """range PHONE in|out — the phone comes into / leaves radio range."""
        a = self._args(arg)
        if len(a) != 2 or a[1] not in ("in", "out"):
            raise ShellError("usage: range PHONE in|out")
        self.run(self.world.set_in_range(a[0], a[1] == "in"))

    def complete_range(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_phone_first(text, line, ["in", "out"])

    def do_window(self, arg: str) -> None:
        """window [SECONDS] | window close — the driver taps "add a phone": the car becomes discoverable
        and accepts pairing for SECONDS (default: the daemon's configured time); close ends it."""
        a = self._args(arg)
        dash = self._dash()
        if a == ["close"]:
            self.run(dash.call("Phones1.ClosePairingWindow", []))
            self.out("  pairing window closed")
            return
        if len(a) > 1 or (a and not a[0].isdigit()):
            raise ShellError("usage: window [SECONDS] | window close")
        granted = self.run(dash.call("Phones1.OpenPairingWindow", [int(a[0]) if a else 0]))
        self.out(f"  the car is discoverable for {human_duration(float(granted))}: pair PHONE now")

    def complete_window(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_from(["close", "60", "120"], text)

    def do_pair(self, arg: str) -> None:
        """pair PHONE [PASSKEY] — the phone starts pairing with the car.  The car must be in its pairing
        window (window [SECONDS]) or already know the phone.  Answer the dashboard's prompt with
        prompt yes|no; the outcome for the phone is printed when pairing ends."""
        a = self._args(arg)
        if not 1 <= len(a) <= 2:
            raise ShellError("usage: pair PHONE [PASSKEY]")
        phone = self._phone(a[0])
        passkey = int(a[1]) if len(a) == 2 else None

        def done(r: object) -> None:
            hint = PAIR_HINTS.get(str(r)) if isinstance(r, str) else None
            self.emit(f"  phone {phone.name}: pairing ended: {r}" + (f" — {hint}" if hint else ""))

        self.lt.submit(self.world.phone_pair(phone.address, passkey), done)
        self.out(f"  {phone.name} asks the car to pair ...")

    def complete_pair(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_phone_first(text, line)

    def do_reject(self, arg: str) -> None:
        """reject PHONE — the user will tap Cancel on the phone's next pairing dialog (accept PHONE undoes)."""
        self.call(self.world.phone_accepts_pairing, self._one(arg, "reject PHONE"), False)

    def do_accept(self, arg: str) -> None:
        """accept PHONE — the user will tap Pair on the phone's pairing dialog (the default)."""
        self.call(self.world.phone_accepts_pairing, self._one(arg, "accept PHONE"), True)

    def do_connect(self, arg: str) -> None:
        """connect PHONE — the phone connects to the car by itself."""
        ok = self.run(self.world.phone_connect(self._one(arg, "connect PHONE")))
        self.out("  connected" if ok else "  the car did not accept any profile")

    def do_disconnect(self, arg: str) -> None:
        """disconnect PHONE — the phone drops the link (Bluetooth switched off on the phone)."""
        self.run(self.world.phone_disconnect(self._one(arg, "disconnect PHONE")))

    def do_forget_car(self, arg: str) -> None:
        """forget_car PHONE — the user removes the car from the phone (the car's key stops working)."""
        self.call(self.world.phone_forgets_car, self._one(arg, "forget_car PHONE"))

    complete_reject = complete_accept = complete_connect = complete_disconnect = complete_forget_car = \
        complete_pair

    def _one(self, arg: str, usage: str) -> str:
        a = self._args(arg)
        if len(a) != 1:
            raise ShellError(f"usage: {usage}")
        return self._phone(a[0]).address

    # -- the companion app (simulator/companion.py, docs/ble-companion.md) --------------------------

    COMPANION_USAGE = ('usage: companion PHONE send-destination LABEL LAT LON | companion PHONE send-destination '
                       'LABEL --address "TEXT" | companion PHONE lease [--version N] [--forged] [--vehicle VIN] '
                       '[--expired] [--empty] | companion PHONE status | companion PHONE start|stop')

    def do_companion(self, arg: str) -> None:
        """companion PHONE send-destination LABEL LAT LON [--id ID] | companion PHONE send-destination LABEL
        --address "TEXT" [--id ID] | companion PHONE lease [--version N] [--forged] [--vehicle VIN] [--expired]
        [--empty] | companion PHONE status | companion PHONE start|stop — the carmaker's companion app on the
        phone (docs/ble-companion.md): the driver sends a destination to the car; the app fetched a lease
        for the car (by default a new one the backend issues; --version N: that version, e.g. a roll-back;
        --forged: signed by a key the car does not trust; --vehicle: for another car; --expired; --empty:
        no lease); what the car read and acknowledged; the app is started or stopped."""
        a = self._args(arg)
        if len(a) < 2:
            raise ShellError(self.COMPANION_USAGE)
        phone = self._phone(a[0])
        verb, rest = str(a[1]), [str(x) for x in a[2:]]
        opts: dict[str, str | bool] = {}
        pos: list[str] = []
        i = 0
        while i < len(rest):
            w = rest[i]
            if w in ("--address", "--id", "--version", "--vehicle"):
                if i + 1 >= len(rest):
                    raise ShellError(f"{w} needs a value; {self.COMPANION_USAGE}")
                opts[w[2:]] = rest[i + 1]
                i += 2
            elif w in ("--forged", "--expired", "--empty"):
                opts[w[2:]] = True
                i += 1
            elif w.startswith("--") and not _is_number(w):
                raise ShellError(f"unknown option {w}; {self.COMPANION_USAGE}")
            else:
                pos.append(w)
                i += 1
        if verb == "send-destination":
            address = opts.get("address")
            if len(pos) == 3 and address is None:
                try:
                    lat, lon = float(pos[1]), float(pos[2])
                except ValueError:
                    raise ShellError(self.COMPANION_USAGE) from None
                did = self.call(self.world.companion_send_destination, phone.address, pos[0], lat=lat, lon=lon,
                                id=opts.get("id"))
            elif len(pos) == 1 and isinstance(address, str):
                did = self.call(self.world.companion_send_destination, phone.address, pos[0], address=address,
                                id=opts.get("id"))
            else:
                raise ShellError(self.COMPANION_USAGE)
            self.out(f"  {phone.name}: destination {did} pending for the car")
        elif verb == "lease":
            if pos:
                raise ShellError(self.COMPANION_USAGE)
            version = opts.get("version")
            if version is not None and not str(version).isdigit():
                raise ShellError("--version takes a whole number")
            vehicle = opts.get("vehicle")
            jws = self.call(self.world.companion_lease, phone.address,
                            version=int(str(version)) if version is not None else None,
                            forged=bool(opts.get("forged")), vehicle=str(vehicle) if vehicle else None,
                            expired=bool(opts.get("expired")), empty=bool(opts.get("empty")))
            self.out(f"  {phone.name} serves a lease of {len(jws)} bytes" if jws else f"  {phone.name} serves no lease")
        elif verb == "status" and not pos and not opts:
            self.out(_show(self.call(self.world.companion_status, phone.address)))
        elif verb in ("start", "stop") and not pos and not opts:
            self.call(self.world.companion_running, phone.address, verb == "start")
            self.out(f"  {phone.name}: companion app {'started' if verb == 'start' else 'stopped'}")
        else:
            raise ShellError(self.COMPANION_USAGE)

    def complete_companion(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line.split()
        if len(words) >= 3 or (len(words) == 3 and not text):
            if words[2:3] == ["lease"]:
                return self._complete_from(["--version", "--forged", "--vehicle", "--expired", "--empty"], text)
            if words[2:3] == ["send-destination"]:
                return self._complete_from(["--address", "--id"], text)
        return self._complete_phone_first(text, line, ["send-destination", "lease", "status", "start", "stop"])

    def do_le_connect(self, arg: str) -> None:
        """le_connect PHONE — the phone makes an LE connection to the car (bonded or not): the car
        resolves its GATT services (the companion service among them)."""
        ok = self.run(self.world.le_connect(self._one(arg, "le_connect PHONE")))
        self.out("  LE link up, services resolved" if ok else "  no LE connection (out of range or adapter off)")

    complete_le_connect = complete_pair

    def do_sms(self, arg: str) -> None:
        """sms PHONE FROM TEXT... — a text message reaches the phone (FROM: a number; name=NAME optional)."""
        pos, kw = _kv(self._args(arg))
        if len(pos) < 3:
            raise ShellError("usage: sms PHONE FROM TEXT...  [name=SENDER_NAME]")
        self.call(self.world.deliver_message, pos[0], "SMS_GSM", str(pos[1]), " ".join(pos[2:]),
                  sender_name=kw.get("name", ""))
        self.out("  delivered to the phone")

    def do_email(self, arg: str) -> None:
        """email PHONE FROM SUBJECT TEXT... — an e-mail reaches the phone (quote the subject if it has spaces)."""
        pos, kw = _kv(self._args(arg))
        if len(pos) < 4:
            raise ShellError('usage: email PHONE FROM "SUBJECT" TEXT...  [name=SENDER_NAME]')
        self.call(self.world.deliver_message, pos[0], "EMAIL", str(pos[1]), " ".join(pos[3:]), subject=str(pos[2]),
                  sender_name=kw.get("name", ""))
        self.out("  delivered to the phone")

    complete_sms = complete_email = complete_pair

    def do_ring(self, arg: str) -> None:
        """ring PHONE NUMBER [NAME] — a call comes in to the phone (during a call: it waits).
        NAME: the caller name the network sends (the car prefers the phone's contacts)."""
        a = self._args(arg)
        if len(a) not in (2, 3):
            raise ShellError("usage: ring PHONE NUMBER [NAME]")
        phone = self._phone(a[0])
        ofono = self.call(self.world.fake, "ofono")
        self.call(ofono.incoming_call, phone.address, str(a[1]), str(a[2]) if len(a) == 3 else "")
        self.out(f"  {phone.name} rings")

    def do_remote(self, arg: str) -> None:
        """remote PHONE answer|alerting|hangup — the other party of the phone's call answers, starts
        ringing, or hangs up."""
        a = self._args(arg)
        acts = {"answer": "remote_answer", "alerting": "remote_alerting", "hangup": "remote_hangup"}
        if len(a) != 2 or a[1] not in acts:
            raise ShellError("usage: remote PHONE answer|alerting|hangup")
        phone = self._phone(a[0])
        ofono = self.call(self.world.fake, "ofono")
        self.call(getattr(ofono, acts[a[1]]), phone.address)

    def complete_remote(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_phone_first(text, line, ["answer", "alerting", "hangup"])

    def do_contacts(self, arg: str) -> None:
        """contacts PHONE allow|pending|deny — the user answers the phone's "allow access to contacts?"."""
        a = self._args(arg)
        states = {"allow": "granted", "pending": "pending", "deny": "denied"}
        if len(a) != 2 or a[1] not in states:
            raise ShellError("usage: contacts PHONE allow|pending|deny")
        from .obex_pbap import set_permission

        phone = self._phone(a[0])
        obexd = self.call(self.world.fake, "obexd")
        self.call(set_permission, obexd, phone.address, states[a[1]])

    def complete_contacts(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_phone_first(text, line, ["allow", "pending", "deny"])

    complete_ring = complete_pair

    def do_backend(self, arg: str) -> None:
        """backend offline|online|blackhole [old|new] | migrate migrating|migrated | approve | state —
        the carmaker's backend: take its address offline (or back), migrate it to a new address,
        approve a pending registration, or show what it holds."""
        a = self._args(arg)
        b = self.call(self.world.fake, "backend")
        if not a:
            raise ShellError("usage: backend offline|online|blackhole [old|new] | migrate PHASE | approve | state")
        if a[0] in ("offline", "online", "blackhole"):
            addr = a[1] if len(a) > 1 else "old"
            if addr not in ("old", "new"):
                raise ShellError("the address is old or new")
            self.run(b.set_listener(addr, "up" if a[0] == "online" else a[0]))
            self.out(f"  backend {addr} address: {a[0]}")
        elif a[0] == "migrate" and len(a) == 2 and a[1] in ("migrating", "migrated"):
            self.run(b.migrate(a[1]))
            self.out(f"  backend {a[1]} (new address {self.call(lambda: b.new.base)})")
        elif a[0] == "approve":
            self.call(b.approve, self.world.vehicle_id)
        elif a[0] == "state":
            def look() -> str:
                v = b.vehicles[self.world.vehicle_id]
                return (f"  phase {b.phase}; old address {b.old.mode}, new {b.new.mode}; registration "
                        f"{v.registration}; {len(b.log)} requests, {len(b.effects)} effects")

            self.out(self.call(look))
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
        total = self.call(lambda: self.world.clock_offset)
        self.out(f"  simulated time is now {human_duration(seconds)} further on "
                 f"({human_duration(total)} ahead of real time)")

    def do_prompt(self, arg: str) -> None:
        """prompt yes|no [VALUE] — answer the latest pairing prompt the dashboard was shown, as the
        driver would (VALUE: the PIN or passkey typed)."""
        a = self._args(arg)
        if not a or a[0] not in ("yes", "no"):
            raise ShellError("usage: prompt yes|no [VALUE]")
        dash = self._dash()

        def open_prompts() -> dict[int, str]:
            open_: dict[int, str] = {}
            for ev in dash.events:
                if ev.member == "PromptRequested":
                    open_[int(ev.named["prompt"])] = ev.named.get("kind", "")
                elif ev.member == "PromptCancelled":
                    open_.pop(int(ev.named["prompt"]), None)
            return open_

        open_ = self.call(open_prompts)
        if not open_:
            raise ShellError("no pairing prompt is open")
        prompt = max(open_)
        self.run(dash.call("Phones1.AnswerPrompt", [prompt, a[0] == "yes", str(a[1]) if len(a) > 1 else ""]))

    def complete_prompt(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_from(["yes", "no"], text)

    def do_wait(self, arg: str) -> None:
        """wait Interface.Signal [SECONDS] — until the daemon sends that signal (default 10 s).  Only a
        signal sent after your last command that did something counts (like expect_signal in a
        scenario), and never one an earlier wait already returned."""
        a = self._args(arg)
        if not 1 <= len(a) <= 2:
            raise ShellError("usage: wait Interface.Signal [SECONDS]")
        dash = self._dash()
        m = dash.api.resolve(a[0], "signal")
        try:
            timeout = float(a[1]) if len(a) == 2 else 10.0
        except ValueError:
            raise ShellError("usage: wait Interface.Signal [SECONDS]") from None
        since = max(self._action_mark, self._wait_mark.get(m.name, 0))
        try:
            ev = self.run(dash.wait_for(lambda e: e.interface == m.interface and e.member == m.name, timeout,
                                        since=since), timeout=timeout + 5)
        except TimeoutError:
            raise ShellError(f"no {a[0]} within {timeout:g}s") from None
        self._wait_mark[m.name] = ev.seq + 1
        self.out(f"  got {ev.describe(10**6)}")

    def complete_wait(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_from(self._members("signal"), text)

    def do_restart(self, arg: str) -> None:
        """restart bluetoothd|obexd|ofono|daemon — the service restarts (the name drops, its objects go,
        then it comes back); the daemon is stopped with SIGTERM and started on the same state."""
        a = self._args(arg)
        if len(a) != 1 or a[0] not in World.RESTARTABLE:
            raise ShellError(f"usage: restart {'|'.join(World.RESTARTABLE)}")
        self.run(self.world.restart(a[0]))
        self.out(f"  {a[0]} restarted")

    def complete_restart(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_from(list(World.RESTARTABLE), text)

    # =============================================================================================
    # the dashboard (the public API)
    # =============================================================================================

    def do_call(self, arg: str) -> None:
        """call Interface.Method [ARG ...] — call the daemon as the dashboard does, e.g.
        call Daemon1.Ping.  Arguments are read as YAML (30, true, [a, b]); a quoted argument
        ('+4420', "30") is text unless it is a list or mapping ('[a, b]'), and so is +NUMBER."""
        a = self._args(arg)
        if not a:
            raise ShellError("usage: call Interface.Method [ARG ...]")
        dash = self._dash()
        result = self.run(dash.call(a[0], [_value(x) for x in a[1:]]))
        if result is not None:
            self.out(_show(result))

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
        self.out(_show(value))

    def complete_get(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        ifaces = [i.removeprefix("org.dashbridge.") for i in self._dash().api.interfaces()]
        return self._complete_from([*ifaces, *self._members("property")], text)

    def do_events(self, arg: str) -> None:
        """events [N] — the last N signals the daemon sent (default 20), whole."""
        n = int(arg) if arg.strip().isdigit() else 20
        dash = self._dash()
        t0 = self.world.t0
        for ev in self.call(lambda: list(dash.events[-n:]) if n else []):
            self.out(f"  +{ev.at - t0:7.2f}s {ev.describe(10**6)}")

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
        """quit — leave.  A shell with a world of its own stops it (the daemon, the fakes, the
        buses); a shell that joined dashbridge-sim up leaves that world running."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        self.out()
        return True


def main(args: argparse.Namespace | None = None) -> int:
    """A shell with a world of its own (``dashbridge-sim shell`` when no ``up`` runs, or ``--new``;
    joining ``up``'s world is ``worldshare.join``, chosen in ``__main__``)."""
    from .world import WorldSpec
    from .worldargs import world_spec

    spec = WorldSpec(daemon=not getattr(args, "no_daemon", False))
    if args is not None:
        got = world_spec(args)
        if got is None:
            return 2
        spec = got
    lt = LoopThread()
    world = World(spec)
    shell: SimShell | None = None
    record: str | None = None
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
        record = getattr(args, "record", None)
        if record:
            from .scenario.recorder import Recorder

            shell.recorder = Recorder.for_world(spec, name=f"Recorded in dashbridge-sim shell ({Path(record).name})")
        lt.call(shell.attach)
        print("a world of its own (no dashbridge-sim up is running, or --new): quit stops it")
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
        if record and shell is not None and shell.recorder is not None:
            path = shell.recorder.save(record)
            print(f"recorded {len(shell.recorder.steps)} steps to {path} (replay: dashbridge-sim run {path})")
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
