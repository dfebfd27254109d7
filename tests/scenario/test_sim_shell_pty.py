"""``dashbridge-sim shell`` as a tester types into it: through a pseudo-terminal (readline, the
prompt, signal lines printed above it), against a world of its own and joined to ``up``'s world.

Every step reads until the text it needs appears, under a deadline; nothing sleeps."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from dashbridge.simulator.scenario import schema
from dashbridge.simulator.shell import _value, human_duration, split_words

SIM = [sys.executable, "-m", "dashbridge.simulator"]
CTL = [sys.executable, "-c", "import sys; from dashbridge.daemon.ctl import main; sys.exit(main())"]
ALICE = "name=Alice,address=AA:BB:CC:DD:EE:01,bonded=true"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


class Pty:
    """A program on a pseudo-terminal; ``expect`` reads until a text appears (or fails, showing
    what did appear)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))  # no wrapping
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.buf = ""
        self.seen = ""

    def expect(self, text: str, timeout: float = 30.0) -> str:
        """Everything up to and including ``text`` (consumed)."""
        deadline = time.monotonic() + timeout
        while text not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} within {timeout:g}s; the terminal showed:\n{self.seen[-4000:]}")
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the program has gone
                data = b""
            if not data:
                raise AssertionError(f"the program ended before {text!r}; it showed:\n{self.seen[-4000:]}")
            chunk = _ANSI.sub("", data.decode(errors="replace"))
            self.buf += chunk
            self.seen += chunk
        i = self.buf.index(text) + len(text)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def command(self, line: str, until: str, timeout: float = 30.0) -> str:
        os.write(self.master, (line + "\n").encode())
        return self.expect(until, timeout)

    def run(self, line: str, timeout: float = 30.0) -> str:
        """Type ``line``; everything the terminal shows until the shell has finished it (the
        shell's answer to a marker typed after it)."""
        self.marks = getattr(self, "marks", 0) + 1
        marker = f"done{self.marks}"
        os.write(self.master, f"{line}\n{marker}\n".encode())
        return self.expect(f"unknown command '{marker}'", timeout)

    def close(self) -> int:
        """Wait for the program to end, reading what it still shows (into ``seen``: a failure
        says why it ended, and a program that writes on its way out never blocks on a full
        terminal); its exit status.  Closing twice is closing once."""
        if self.master < 0:
            return self.proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([self.master], [], [], 0.5)
                if ready:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:  # EIO: the program has gone, its terminal with it
                        data = b""
                    if data:
                        chunk = _ANSI.sub("", data.decode(errors="replace"))
                        self.buf += chunk
                        self.seen += chunk
                        continue
                    break
                if self.proc.poll() is not None:
                    break
            try:
                return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(timeout=10)
        finally:
            os.close(self.master)
            self.master = -1


def _env(tmp_path: Path) -> dict[str, str]:
    """A runtime directory of the test's own: no other `up` on this machine is joined."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    return {**os.environ, "XDG_RUNTIME_DIR": str(run), "HOME": str(tmp_path), "TERM": "dumb"}


# -- the words of a command line ------------------------------------------------------------------


def test_quoted_words_stay_text_and_durations_read_as_written() -> None:
    words = split_words("""call Calls1.Dial '+4420' "" 30 "30" '[1, "+44"]' +447700 "Alice's Pixel" a\\ b""")
    assert words == ["call", "Calls1.Dial", "+4420", "", "30", "30", '[1, "+44"]', "+447700", "Alice's Pixel", "a b"]
    values = [_value(w) for w in words[2:]]
    assert values == ["+4420", "", 30, "30", [1, "+44"], "+447700", "Alice's Pixel", "a b"]
    assert [human_duration(s) for s in (1814400, 1814400 - 86400 * 7, 5400, 90, 0.25, 90061)] == \
        ["3w", "2w", "90m", "1m 30s", "250ms", "1d 1h 1m 1s"]


def test_an_unquoted_plus_number_in_a_scenario_keeps_its_plus() -> None:
    text = """version: 1
name: a call from abroad
world:
  phones:
    - {id: a, name: A, address: "AA:BB:CC:DD:EE:01", bonded: true}
steps:
  - phone: a
    do: ring
    number: +447700900123
"""
    sc = schema.loads(text, "abroad.yaml")
    assert sc.steps[0].params["number"] == "+447700900123"
    with pytest.raises(schema.ScenarioError, match=r"bad\.yaml:5: .*passkey: expected a whole number"):
        schema.loads(text.replace('bonded: true}', 'bonded: true, passkey: +123456}'), "bad.yaml")


# -- a shell with a world of its own ----------------------------------------------------------------


@pytest.mark.timeout(150)
def test_the_shell_on_a_terminal(tmp_path: Path) -> None:
    sh = Pty([*SIM, "shell", "--new", "--phone", ALICE], _env(tmp_path))
    try:
        sh.expect("sim> ", 60)
        out = sh.run("help")
        assert "Documented commands" in out and "window" in out and "log" in out
        assert "EOF" not in out
        sh.command("wait Phones1.PhoneConnected 30", "got Phones1.PhoneConnected", 35)

        # messages reach the car at once (they used to wait for a reconnect)
        out = sh.command('sms Alice +447700900123 "hello from the terminal"', "'preview': 'hello from the terminal'")
        assert "delivered to the phone" in out and "⟵ Messages1.MessageReceived: message=" in out
        assert "'sender': '+447700900123'" in out
        out = sh.command('email Alice pat@example.com "Lunch plans" see you at noon', "'subject': 'Lunch plans'")
        assert "⟵ Messages1.MessageReceived" in out and "no running event loop" not in sh.seen
        # signal lines are whole: the last field of the message record is there
        sh.expect("'body_state': 'complete'}")

        sh.command("advance 3w", "simulated time is now 3w further on")
        sh.command("call Calls1.Dial '+4420' ''", "'Number': '+4420'")
        sh.command("remote Alice hangup", "⟵ Calls1.CallRemoved")

        # wait counts what comes after the last action, not what came minutes earlier
        out = sh.run("wait Messages1.MessageReceived 1", 10)
        assert "error: no Messages1.MessageReceived within 1s" in out

        # the pairing window
        sh.command("add Bob AA:BB:CC:DD:EE:02", "is in the world")
        sh.command("pair Bob", "pairing ended: not_found — the car is not discoverable", 40)
        sh.command("window 60", "the car is discoverable for 1m: pair PHONE now")
        sh.command("pair Bob", "⟵ Phones1.PromptRequested", 20)
        sh.command("prompt yes", "pairing ended: paired", 20)

        # the daemon's log
        out = sh.run("status")
        m = re.search(r"daemon +running \(pid \d+, log (\S+)\)", out)
        assert m, out
        out = sh.run("log 5")
        assert f"{m.group(1)}:" in out
        # signal lines ("  ⟵ ...") may come in between, as they arrive: count the log's own lines
        log_lines = [x for x in out.split(f"{m.group(1)}:", 1)[1].splitlines()
                     if x.startswith("  ") and not x.lstrip().startswith("⟵")]
        assert 1 <= len(log_lines) <= 5 and all("dashbridge" in x for x in log_lines), out

        sh.command("quit", "everything stopped", 40)
    finally:
        rc = sh.close()
    assert rc == 0, sh.seen[-3000:]


# -- up, and a shell joining its world ----------------------------------------------------------------


async def _up(env: dict[str, str], *args: str) -> tuple[asyncio.subprocess.Process, dict[str, str], str]:
    proc = await asyncio.create_subprocess_exec(*SIM, "up", *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    err = ""
    async with asyncio.timeout(40):
        while "Ctrl-C" not in err:
            line = (await proc.stderr.readline()).decode()
            assert line, f"up exited early: {err}"
            err += line
    exports: dict[str, str] = {}
    while True:  # the exports were flushed before the stderr lines
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 0.5)).decode()
        except TimeoutError:
            break
        if not line.startswith("export "):
            break
        key, _, value = line.removeprefix("export ").strip().partition("=")
        exports[key] = value.strip("'")
    return proc, exports, err


async def _ctl(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*CTL, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.timeout(180)
async def test_shell_joins_the_world_of_up(tmp_path: Path) -> None:
    env = _env(tmp_path)
    info = Path(env["XDG_RUNTIME_DIR"]) / "dashbridge-sim" / "world.json"
    up, exports, err = await _up(env, "--phone", ALICE)
    monitor: asyncio.subprocess.Process | None = None
    sh: Pty | None = None
    try:
        assert "shell: dashbridge-sim shell joins this world" in err
        published = json.loads(info.read_text())
        assert published["pid"] == up.pid and published["env"]["DBUS_SYSTEM_BUS_ADDRESS"] == \
            exports["DBUS_SYSTEM_BUS_ADDRESS"]
        ctl_env = {**os.environ, **exports}
        monitor = await asyncio.create_subprocess_exec(*CTL, "--json", "monitor", env=ctl_env,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert monitor.stderr is not None and monitor.stdout is not None
        assert "monitoring" in (await asyncio.wait_for(monitor.stderr.readline(), 20)).decode()

        sh = Pty([*SIM, "shell"], env)
        await asyncio.to_thread(sh.expect, "joined the world of dashbridge-sim up", 30)
        out = await asyncio.to_thread(sh.expect, "sim> ", 30)
        assert exports["DBUS_SYSTEM_BUS_ADDRESS"] in out  # status: up's buses, not a second world's
        await asyncio.to_thread(sh.command, "add Bob AA:BB:CC:DD:EE:02", "Bob (AA:BB:CC:DD:EE:02) is in the world")
        await asyncio.to_thread(sh.command, "window 60", "pair PHONE now")
        await asyncio.to_thread(sh.command, "pair Bob", "⟵ Phones1.PromptRequested", 20)
        await asyncio.to_thread(sh.command, "prompt yes", "pairing ended: paired", 20)
        rc, out = await _ctl(ctl_env, "--json", "phones")
        assert rc == 0 and "AA:BB:CC:DD:EE:02" in out, out

        # an sms typed in the joined shell reaches the car: dashbridgectl sees MessageReceived
        await asyncio.to_thread(sh.command, "sms Alice +447700900123 hello from the shell", "delivered to the phone")
        async with asyncio.timeout(20):
            while True:
                line = await monitor.stdout.readline()
                assert line, "monitor ended"
                record = json.loads(line)
                if record.get("member") == "MessageReceived":
                    break
        assert record["args"][0]["preview"] == "hello from the shell"
        assert record["args"][0]["sender"] == "+447700900123"

        os.write(sh.master, b"quit\n")
        assert await asyncio.to_thread(sh.close) == 0, sh.seen[-3000:]
        assert "everything stopped" not in sh.seen
        sh = None
        rc, out = await _ctl(ctl_env, "status")  # quit left up's world running
        assert rc in (0, 3), out
    finally:
        if sh is not None:
            sh.proc.kill()
            sh.close()
        if monitor is not None:
            monitor.kill()
            await monitor.wait()
        up.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(up.communicate(), 40)
    assert up.returncode == 0, rest
    assert not info.exists()


@pytest.mark.timeout(90)
async def test_a_joined_shell_leaves_when_up_stops(tmp_path: Path) -> None:
    env = _env(tmp_path)
    up, _, _ = await _up(env, "--no-daemon")
    sh = Pty([*SIM, "shell"], env)
    try:
        await asyncio.to_thread(sh.expect, "joined the world of dashbridge-sim up", 30)
        out = await asyncio.to_thread(sh.run, "phones")
        assert "no phones; add one with" in out
        up.send_signal(signal.SIGINT)
        await asyncio.wait_for(up.communicate(), 40)
        await asyncio.to_thread(sh.expect, f"the world of dashbridge-sim up (pid {up.pid}) stopped", 20)
    finally:
        rc = await asyncio.to_thread(sh.close)
    assert rc == 1  # the shell did not leave by itself: the world went away under it


@pytest.mark.timeout(120)
async def test_a_joined_shell_leaves_when_up_stops_while_a_command_runs(tmp_path: Path) -> None:
    """The world goes away while the shell waits for a command's answer (not at its prompt): the
    shell must not go back to its prompt and wait for input with nothing behind it."""
    env = _env(tmp_path)
    up, _, _ = await _up(env, "--phone", ALICE)
    sh = Pty([*SIM, "shell"], env)
    try:
        await asyncio.to_thread(sh.expect, "joined the world of dashbridge-sim up", 30)
        await asyncio.to_thread(sh.expect, "sim> ", 30)
        # a command the world answers in 60 s at the earliest: no such signal comes
        await asyncio.to_thread(sh.command, "wait Phones1.PairingFinished 60", "wait Phones1.PairingFinished 60")
        up.send_signal(signal.SIGINT)
        await asyncio.wait_for(up.communicate(), 40)
        await asyncio.to_thread(sh.expect, f"the world of dashbridge-sim up (pid {up.pid}) stopped", 20)
    finally:
        rc = await asyncio.to_thread(sh.close)
    assert rc == 1, sh.seen[-2000:]


@pytest.mark.timeout(150)
def test_a_recorded_shell_session_replays_and_a_phone_takes_its_history_from_files(tmp_path: Path) -> None:
    """``shell --record FILE``: what was done is written as a scenario that ``dashbridge-sim run``
    replays green; ``add ... history=DIR messages=FILE`` gives a phone a real phone's dump."""
    dump = Path(__file__).parents[1] / "data" / "phone_dump"
    rec = tmp_path / "session.yaml"
    sh = Pty([*SIM, "shell", "--new", "--record", str(rec)], _env(tmp_path))
    try:
        sh.expect("sim> ", 90)
        hist = next(p for p in dump.iterdir() if "hist" in p.name or p.suffix == ".vcf" or p.is_dir())
        sh.run(f"add Bob BB:BB:CC:DD:EE:02 history={hist}")
        sh.run("window 60")
        sh.command("pair Bob", "asks the car to pair")
        sh.expect("PromptRequested", 30)
        sh.run("prompt yes")
        sh.command("wait Phones1.PhoneConnected 20", "got Phones1.PhoneConnected", 40)
        sh.command("wait Messages1.SyncFinished 30", "got Messages1.SyncFinished", 50)  # the car reads the phone
        sh.run("sms Bob +447700900456 on my way")
        sh.command("wait Messages1.MessageReceived 20", "got Messages1.MessageReceived", 40)
        sh.command("quit", "everything stopped", 60)
    finally:
        rc = sh.close()
    assert rc == 0, sh.seen[-3000:]
    text = rec.read_text()
    assert "receive_sms" in text and "answer_prompt" in text and "history:" in text, text
    assert "CallHistory" not in text  # steps, not observations; the history itself replays from the files
    replay = subprocess.run([*SIM, "run", str(rec), "-j", "1"], capture_output=True, text=True, timeout=120,
                            env=_env(tmp_path))
    assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-2000:]
