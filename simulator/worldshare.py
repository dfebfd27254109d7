"""One world, many clients: ``dashbridge-sim up`` publishes where its world is; ``shell`` joins it.

``up`` writes ``world.json`` in the user's runtime directory (``$XDG_RUNTIME_DIR/dashbridge-sim/``,
else ``/tmp/dashbridge-sim-<uid>/``, 0700): its pid, the environment to reach the world (bus
addresses, the backend URL, the state directory) and the path of a **control socket** (a Unix
socket in the world's own 0700 temporary directory).  The file is removed when ``up`` exits; a
file whose pid is gone is stale and ignored.

The control socket speaks JSON lines.  Each client gets a shell (:class:`~simulator.shell.SimShell`)
*in the up process*: its commands run on a worker thread and reach the world on up's loop, so a
joined shell does exactly what a shell with its own world does.  Client -> server:
``{"op": "line", "id": N, "line": "..."}``, ``{"op": "complete", "id": N, "text", "line", "begidx",
"endidx"}``, ``{"op": "interrupt"}``.  Server -> client: ``{"op": "hello", "pid", "env"}``,
``{"op": "out", "text"}`` (a command's output), ``{"op": "event", "text"}`` (a signal, a pairing
outcome: any time), ``{"op": "done", "id", "stop"}``, ``{"op": "completions", "id", "items"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .world import World
from .worldargs import developer_env

INFO_NAME = "world.json"
CONTROL_NAME = "control.sock"
REPLY_S = 5.0  # a completion or the hello from up


# -- where a world is ----------------------------------------------------------------------------


def runtime_dir() -> Path:
    """The user's directory for the published world (created 0700)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    base_ok = bool(xdg) and Path(str(xdg)).is_dir()
    d = Path(str(xdg)) / "dashbridge-sim" if base_ok else Path("/tmp") / f"dashbridge-sim-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    st = d.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{d} is not a private directory of this user")
    return d


@dataclass
class WorldInfo:
    pid: int
    control: str
    env: dict[str, str]
    path: Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process got the pid
    return True


def find() -> WorldInfo | None:
    """The running ``up``'s world, or None (no file, or a stale one)."""
    try:
        path = runtime_dir() / INFO_NAME
        data = json.loads(path.read_text())
        info = WorldInfo(int(data["pid"]), str(data["control"]), dict(data["env"]), path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(info.pid) or not Path(info.control).exists():
        return None
    return info


def publish(world: World, control: Path) -> tuple[Path | None, WorldInfo | None]:
    """Write world.json for this process; (path, None) — or (None, the other world) when another
    live ``up`` has published already (``shell`` keeps joining that one)."""
    other = find()
    if other is not None and other.pid != os.getpid():
        return None, other
    path = runtime_dir() / INFO_NAME
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "control": str(control), "env": developer_env(world)}))
    os.replace(tmp, path)
    return path, None


def unpublish(path: Path | None) -> None:
    """Remove world.json if it is still ours."""
    if path is None:
        return
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(path.read_text())["pid"] == os.getpid():
            path.unlink()


# -- the server, in up's process -------------------------------------------------------------------


class _Sink:
    """A text stream whose writes go to a client as ``out`` messages (from any thread)."""

    def __init__(self, send: Any) -> None:
        self._send = send

    def write(self, text: str) -> int:
        if text:
            self._send({"op": "out", "text": text})
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class ControlServer:
    """Serves the control socket on the world's loop; every client drives the same world."""

    def __init__(self, world: World, path: Path) -> None:
        self.world = world
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> ControlServer:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from .shell import LoopRef, SimShell

        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        self._writers.add(writer)
        loop = asyncio.get_running_loop()

        def send(obj: dict[str, Any]) -> None:  # on the loop
            if not writer.is_closing():
                writer.write((json.dumps(obj) + "\n").encode())

        def send_any_thread(obj: dict[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
                loop.call_soon_threadsafe(send, obj)

        shell = SimShell(LoopRef(loop), self.world, stdout=_Sink(send_any_thread),  # type: ignore[arg-type]
                         emit=lambda text: send_any_thread({"op": "event", "text": text}), joined=True)
        shell.attach()
        lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def commands() -> None:
            while True:
                msg = await lines.get()
                stop = await loop.run_in_executor(None, shell.onecmd, str(msg.get("line", "")))
                send({"op": "done", "id": msg.get("id"), "stop": bool(stop)})
                if stop:
                    await writer.drain()
                    writer.close()
                    return

        worker = asyncio.ensure_future(commands())
        try:
            send({"op": "hello", "pid": os.getpid(), "env": developer_env(self.world)})
            while not worker.done():
                raw = await reader.readline()
                if not raw:
                    break
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                op = msg.get("op")
                if op == "line":
                    lines.put_nowait(msg)
                elif op == "interrupt":
                    shell.interrupt()
                elif op == "complete":
                    try:
                        items = shell.completions(str(msg["text"]), str(msg["line"]), int(msg["begidx"]),
                                                  int(msg["endidx"]))
                    except Exception:
                        items = []
                    send({"op": "completions", "id": msg.get("id"), "items": items})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            worker.cancel()
            shell.interrupt()
            shell.detach()
            writer.close()
            self._writers.discard(writer)
            self._clients.discard(task)

    async def close(self) -> None:
        """Stop listening and drop every client (they say the world stopped and leave)."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._clients):
            t.cancel()
        if self._clients:
            await asyncio.wait(list(self._clients), timeout=5)
        with contextlib.suppress(OSError):
            self.path.unlink()


# -- the client: a shell joined to up's world ---------------------------------------------------------


class _WorldGone(Exception):
    """Raised in the prompt thread when up's world went away while it waited for input."""


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: dict[str, Any] = {}


def join(info: WorldInfo) -> int:
    """``dashbridge-sim shell`` joined to a running ``up``: the prompt here, the commands there."""
    import cmd

    from .shell import HISTORY, print_above_prompt

    try:
        import readline
    except ImportError:  # pragma: no cover - no readline on this Python
        readline = None  # type: ignore[assignment]

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(info.control)
    except OSError as exc:
        print(f"dashbridge-sim shell: cannot reach the world of dashbridge-sim up (pid {info.pid}) at "
              f"{info.control}: {exc}; --new starts a world of its own", file=sys.stderr)
        return 1
    rfile = sock.makefile("rb")
    send_lock = threading.Lock()
    out_lock = threading.Lock()
    pending: dict[int, _Pending] = {}
    ids = itertools.count(1)
    closed = threading.Event()  # the connection is gone
    left = threading.Event()  # the user left (quit, Ctrl-D)
    state = {"at_prompt": False}
    # Held while the prompt thread goes to the prompt and while the reader sees the connection
    # end: either the prompt thread sees the world gone and does not wait for input, or the reader
    # sees it at the prompt and ends input() with SIGUSR1 -- never neither (the shell would wait
    # for input with nothing behind it).
    prompt_lock = threading.Lock()

    def to_prompt() -> bool:
        """About to wait for input: False when the world is already gone."""
        with prompt_lock:
            if closed.is_set():
                return False
            state["at_prompt"] = True
            return True

    def send(obj: dict[str, Any]) -> None:
        with send_lock:
            sock.sendall((json.dumps(obj) + "\n").encode())

    hello_raw = rfile.readline()
    try:
        hello = json.loads(hello_raw)
    except ValueError:
        hello = {}
    if hello.get("op") != "hello":
        print("dashbridge-sim shell: the world did not answer", file=sys.stderr)
        return 1

    class Remote(cmd.Cmd):
        prompt = "sim> "
        intro = ("dashbridge simulator — you are the world around the daemon.  "
                 "Type help for commands, help <command> for one; Tab completes.")

        def _request(self, obj: dict[str, Any], timeout: float | None = None) -> dict[str, Any] | None:
            if closed.is_set():
                return None
            rid = next(ids)
            p = pending[rid] = _Pending()
            try:
                send({**obj, "id": rid})
            except OSError:
                return None
            try:
                if not p.done.wait(timeout):
                    return None
            finally:
                pending.pop(rid, None)
            return p.reply

        def onecmd(self, line: str) -> bool:
            if closed.is_set():
                return True
            state["at_prompt"] = False
            while True:
                try:
                    reply = self._request({"op": "line", "line": line})
                    break
                except KeyboardInterrupt:
                    # Ctrl-C while a command runs: the world stops waiting for it
                    with contextlib.suppress(OSError):
                        send({"op": "interrupt"})
                    line = ""  # the command's answer still comes; what follows is an empty line
                    print("^C")
            return True if reply is None else bool(reply.get("stop"))

        def preloop(self) -> None:
            if not to_prompt():
                raise _WorldGone

        def postcmd(self, stop: bool, line: str) -> bool:
            return stop or not to_prompt()

        def __init__(self) -> None:
            super().__init__()
            self.matches: list[str] = []

        def complete(self, text: str, state_: int) -> str | None:  # type: ignore[override]  # typeshed is wrong
            if state_ == 0:
                assert readline is not None
                reply = self._request({"op": "complete", "text": text, "line": readline.get_line_buffer(),
                                       "begidx": readline.get_begidx(), "endidx": readline.get_endidx()},
                                      timeout=REPLY_S)
                self.matches = list(reply.get("items", [])) if reply else []
            try:
                return self.matches[state_]
            except IndexError:
                return None

    def reader() -> None:
        try:
            for raw in rfile:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                op = msg.get("op")
                if op == "out":
                    with out_lock:
                        sys.stdout.write(msg.get("text", ""))
                        sys.stdout.flush()
                elif op == "event":
                    with out_lock:
                        print_above_prompt(sys.stdout, str(msg.get("text", "")),
                                           Remote.prompt if state["at_prompt"] else None)
                elif op in ("done", "completions"):
                    if msg.get("stop"):
                        left.set()  # quit/Ctrl-D: up closes this connection next
                    p = pending.get(msg.get("id"))
                    if p is not None:
                        p.reply = msg
                        p.done.set()
        except (OSError, ValueError):
            pass
        finally:
            with prompt_lock:
                first = not closed.is_set()
                closed.set()
                at_prompt = state["at_prompt"]
            if first:
                for p in list(pending.values()):
                    p.done.set()
                if not left.is_set():
                    with out_lock:
                        print_above_prompt(sys.stdout, f"the world of dashbridge-sim up (pid {info.pid}) stopped",
                                           None)
                    if at_prompt:
                        # out of input(): the prompt has nothing left to drive (the main thread's
                        # select must see the signal, so it is sent to that thread)
                        signal.pthread_kill(main_thread, signal.SIGUSR1)

    if readline is not None:
        readline.set_completer_delims(" \t\n")
        with contextlib.suppress(OSError):
            readline.read_history_file(HISTORY)
    def world_gone(signum: int, frame: Any) -> None:
        raise _WorldGone

    main_thread = threading.main_thread().ident or 0
    signal.signal(signal.SIGUSR1, world_gone)  # the reader's way to end input() when up stops
    shell = Remote()
    print(f"joined the world of dashbridge-sim up (pid {info.pid}); quit leaves it running "
          "(dashbridge-sim shell --new: a world of its own)")
    thread = threading.Thread(target=reader, name="world-reader", daemon=True)
    thread.start()
    code = 1  # 1: the world went away under the shell (or the shell failed)
    try:
        try:
            shell.onecmd("status")
            while not closed.is_set():
                try:
                    shell.cmdloop()  # (its preloop and postcmd go to the prompt: to_prompt)
                    break
                except _WorldGone:
                    break
                except KeyboardInterrupt:
                    if closed.is_set():
                        break
                    print("^C (quit or Ctrl-D to leave)")
                    shell.intro = ""
        finally:
            # Out of the prompt: the reader's SIGUSR1 has nothing left to end (raised here, during
            # the clean-up, it would skip the exit below).
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            if readline is not None:
                with contextlib.suppress(OSError):
                    readline.write_history_file(HISTORY)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            thread.join(timeout=2)
        code = 0 if left.is_set() else 1
    except BaseException:
        traceback.print_exc()
    finally:
        # The reader is a daemon thread that may still hold the lock of a buffered file (its
        # socket file, or stdout while printing a signal line); interpreter finalization aborts
        # the process (SIGABRT) when it cannot take such a lock.  So every way out of here leaves
        # without finalization, output flushed.
        if out_lock.acquire(timeout=1.0):  # not while the reader is half-way through a line
            try:
                with contextlib.suppress(OSError, ValueError):
                    sys.stdout.flush()
                    sys.stderr.flush()
            finally:
                out_lock.release()
        os._exit(code)
