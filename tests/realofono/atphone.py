"""A phone's hands-free audio-gateway side, speaking AT commands on one end of a socketpair.

ofonod (the hands-free unit) gets the other end through ``Profile1.NewConnection`` and drives the
service-level connection and call control with AT commands (oFono's ``drivers/hfpmodem``:
``slc.c``, ``voicecall.c``, ``network-registration.c``, ``handsfree.c``, ``call-volume.c``).  This
answers them as a phone does (HFP 1.7 §4, 3GPP 27.007) and sends the unsolicited results a phone
sends: ``RING`` + ``+CLIP`` for an incoming call, ``+CCWA`` for a waiting call, ``+CIEV`` for
indicator changes.

The call list (``+CLCC``) and indicators belong to :class:`ATPhone` and outlive one RFCOMM
session, so an ofonod restart or a link loss finds the calls still on the phone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# AG features (+BRSF): three-way calling, EC/NR, in-band ring tone, reject a call, enhanced call
# status, enhanced call control, extended error codes.  No codec negotiation (no audio here) and no
# HF indicators.
AG_FEATURES = 1 | 2 | 8 | 32 | 64 | 128 | 256
INDICATORS = ("service", "call", "callsetup", "callheld", "signal", "roam", "battchg")
CIND_RANGES = '("service",(0,1)),("call",(0,1)),("callsetup",(0-3)),("callheld",(0-2)),("signal",(0-5)),' \
              '("roam",(0,1)),("battchg",(0-5))'

# +CLCC <stat>
ACTIVE, HELD, DIALING, ALERTING, INCOMING, WAITING = 0, 1, 2, 3, 4, 5


@dataclass
class ATCall:
    idx: int
    mt: bool  # mobile terminated (incoming)
    stat: int
    number: str
    mpty: bool = False

    @property
    def toa(self) -> int:
        return 145 if self.number.startswith("+") else 129


class ATPhone:
    """The phone.  ``attach(sock)`` for each RFCOMM connection ofonod gets."""

    def __init__(self, address: str, *, operator: str = "SimNet", signal: int = 4, battery: int = 5) -> None:
        self.address = address.upper()
        self.operator = operator
        self.ind = {"service": 1, "call": 0, "callsetup": 0, "callheld": 0, "signal": signal, "roam": 0,
                    "battchg": battery}
        self.calls: dict[int, ATCall] = {}
        self.received: list[str] = []  # every AT command from ofonod, in order
        self.dtmf: list[str] = []
        self.last_dialled = ""
        self.events = False  # +CMER=3,0,0,1 seen: indicator events wanted
        self.clip = False
        self.ccwa = False
        self.sessions = 0
        self.refuse_dial = False
        self.refuse_answer = False  # ATA -> +CME ERROR: 3 ("operation not allowed"); the call keeps ringing
        self._sock: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.slc = asyncio.Event()  # the service-level connection is up (all SLC commands answered)
        self.on_closed: Callable[[], None] | None = None  # the car closed the RFCOMM link

    # ------------------------------------------------------------------ session

    def attach(self, sock: socket.socket) -> None:
        self.detach()
        sock.setblocking(False)
        self._sock = sock
        self.sessions += 1
        self.events = self.clip = self.ccwa = False
        self.slc.clear()
        self._reader = asyncio.get_running_loop().create_task(self._read(sock), name=f"atphone:{self.address}")

    def detach(self) -> None:
        """Drop the RFCOMM link (the phone walked away)."""
        sock, self._sock = self._sock, None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.slc.clear()

    @property
    def attached(self) -> bool:
        return self._sock is not None

    async def _read(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        buf = b""
        closed_by_car = False
        try:
            while True:
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    closed_by_car = True
                    break
                buf += data
                while b"\r" in buf:
                    line, _, buf = buf.partition(b"\r")
                    cmd = line.strip().decode(errors="replace")
                    if cmd:
                        self.received.append(cmd)
                        try:
                            self._handle(cmd)
                        except Exception:
                            log.exception("AT phone failed on %r", cmd)
                            self._send("ERROR")
                        self._bump()
        except ConnectionResetError:
            closed_by_car = True
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if self._sock is sock:
                self._sock = None
                sock.close()
                self.slc.clear()
                if closed_by_car and self.on_closed is not None:
                    self.on_closed()
            self._bump()

    def _send(self, *lines: str) -> None:
        sock = self._sock
        if sock is None:
            return
        data = "".join(f"\r\n{line}\r\n" for line in lines).encode()
        try:
            sock.send(data)
        except OSError:
            log.debug("AT phone: link gone while sending %r", lines)

    def _bump(self) -> None:
        self._changed.set()

    async def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``pred()`` holds (re-checked after every command and event)."""
        async with asyncio.timeout(timeout):
            while not pred():
                self._changed.clear()
                await self._changed.wait()

    async def wait_command(self, prefix: str, *, after: int = 0, timeout: float = 10.0) -> str:
        """The first command from ofonod starting with ``prefix`` (from index ``after``)."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [c for c in self.received[after:] if c.startswith(prefix)]
            return bool(found)

        await self.wait(seen, timeout)
        return found[0]

    # ------------------------------------------------------------------ indicators

    def _ciev(self, name: str, value: int) -> None:
        if self.ind[name] == value:
            return
        self.ind[name] = value
        if self.events:
            self._send(f"+CIEV: {INDICATORS.index(name) + 1},{value}")

    def _update_call_indicators(self) -> None:
        stats = [c.stat for c in self.calls.values()]
        self._ciev("call", 1 if any(s in (ACTIVE, HELD) for s in stats) else 0)
        if INCOMING in stats or WAITING in stats:
            setup = 1
        elif DIALING in stats:
            setup = 2
        elif ALERTING in stats:
            setup = 3
        else:
            setup = 0
        self._ciev("callsetup", setup)
        active, held = ACTIVE in stats, HELD in stats
        self._ciev("callheld", 0 if not held else (1 if active else 2))

    def _next_idx(self) -> int:
        i = 1
        while i in self.calls:
            i += 1
        return i

    def _with(self, *stats: int) -> list[ATCall]:
        return [c for c in sorted(self.calls.values(), key=lambda c: c.idx) if c.stat in stats]

    # ------------------------------------------------------------------ AT commands

    def _handle(self, cmd: str) -> None:
        up = cmd.upper()
        if up.startswith("AT+BRSF="):
            self._send(f"+BRSF: {AG_FEATURES}", "OK")
        elif up == "AT+CIND=?":
            self._send(f"+CIND: {CIND_RANGES}", "OK")
        elif up == "AT+CIND?":
            self._send("+CIND: " + ",".join(str(self.ind[n]) for n in INDICATORS), "OK")
        elif up.startswith("AT+CMER="):
            self.events = up.endswith(",1")
            self._send("OK")
        elif up == "AT+CHLD=?":
            self._send("+CHLD: (0,1,1x,2,2x,3,4)", "OK")
            self.slc.set()  # with three-way calling this is the last SLC step
        elif up.startswith("AT+CLIP="):
            self.clip = up.endswith("1")
            self._send("OK")
        elif up.startswith("AT+CCWA="):
            self.ccwa = up.endswith("1")
            self._send("OK")
        elif up == "AT+CLCC":
            lines = [f'+CLCC: {c.idx},{int(c.mt)},{c.stat},0,{int(c.mpty)},"{c.number}",{c.toa}'
                     for c in sorted(self.calls.values(), key=lambda c: c.idx)]
            self._send(*lines, "OK")
        elif up == "AT+COPS?":
            self._send(f'+COPS: 0,0,"{self.operator}"', "OK")
        elif up == "AT+CNUM":
            self._send("OK")
        elif up == "ATA":
            ringing = self._with(INCOMING)
            if ringing and self.refuse_answer:
                self._send("+CME ERROR: 3")
                return
            if not ringing:
                self._send("ERROR")
                return
            self._send("OK")
            ringing[0].stat = ACTIVE
            self._update_call_indicators()
        elif up == "AT+CHUP":
            targets = self._with(ACTIVE, DIALING, ALERTING, INCOMING)
            if not targets:
                self._send("ERROR")
                return
            self._send("OK")
            for c in targets:
                del self.calls[c.idx]
            self._after_release()
        elif up.startswith("ATD") and up.endswith(";"):
            number = cmd[3:-1]
            if number.startswith(">") or self.refuse_dial or self._with(DIALING, ALERTING, INCOMING):
                self._send("ERROR")
                return
            self._dial(number)
        elif up == "AT+BLDN":
            if not self.last_dialled:
                self._send("ERROR")
                return
            self._dial(self.last_dialled)
        elif up.startswith("AT+CHLD="):
            self._chld(up[8:])
        elif up.startswith("AT+VTS="):
            # ofono sends "AT+VTS=1;+VTS=2;..." for a string of tones
            self.dtmf.append("".join(part.split("=", 1)[1] for part in up[3:].split(";") if "=" in part))
            self._send("OK")
        else:
            # CMEE, NREC, VGS, VGM, BIA, BVRA, XAPL... are fine with a phone that just says OK.
            self._send("OK")

    def _dial(self, number: str) -> None:
        self._send("OK")
        for c in self._with(ACTIVE):
            c.stat = HELD
        c = ATCall(self._next_idx(), False, DIALING, number)
        self.calls[c.idx] = c
        self.last_dialled = number
        self._update_call_indicators()

    def _chld(self, arg: str) -> None:
        active, held, waiting = self._with(ACTIVE), self._with(HELD), self._with(WAITING, INCOMING)
        if arg == "0":  # release held calls, or reject the waiting one (UDUB)
            for c in (waiting or held):
                del self.calls[c.idx]
        elif arg == "1":  # release active calls, accept the held or waiting one
            for c in active:
                del self.calls[c.idx]
            for c in (waiting[:1] or held):
                c.stat = ACTIVE
        elif arg.startswith("1") and arg[1:].isdigit():
            self.calls.pop(int(arg[1:]), None)
        elif arg == "2":  # hold active calls, accept the held or waiting one
            for c in active:
                c.stat = HELD
            for c in (waiting[:1] or held):
                c.stat = ACTIVE
        elif arg.startswith("2") and arg[1:].isdigit():
            keep = int(arg[1:])
            for c in active:
                c.stat = ACTIVE if c.idx == keep else HELD
        elif arg == "3":
            for c in active + held:
                c.stat, c.mpty = ACTIVE, True
        else:
            self._send("ERROR")
            return
        self._send("OK")
        self._after_release()

    def _after_release(self) -> None:
        if not self._with(ACTIVE, HELD, DIALING, ALERTING):
            for c in self._with(WAITING):
                c.stat = INCOMING
        self._update_call_indicators()

    # ------------------------------------------------------------------ the world acting on the phone

    def ring(self, number: str) -> int:
        """An incoming call: callsetup=1, RING, +CLIP (or +CCWA when a call is in progress)."""
        busy = bool(self._with(ACTIVE, HELD, DIALING, ALERTING))
        c = ATCall(self._next_idx(), True, WAITING if busy else INCOMING, number)
        self.calls[c.idx] = c
        if busy:
            if self.ccwa:
                self._send(f'+CCWA: "{number}",{c.toa},1')
        else:
            self._send("RING")
            if self.clip:
                self._send(f'+CLIP: "{number}",{c.toa}')
        self._update_call_indicators()
        self._bump()
        return c.idx

    def remote_alerting(self) -> None:
        for c in self._with(DIALING):
            c.stat = ALERTING
        self._update_call_indicators()
        self._bump()

    def remote_answer(self) -> None:
        """The called party picks up (outgoing), or the user answers on the handset."""
        for c in self._with(DIALING, ALERTING, INCOMING):
            for a in self._with(ACTIVE):
                a.stat = HELD
            c.stat = ACTIVE
            break
        self._update_call_indicators()
        self._bump()

    def remote_hangup(self, idx: int | None = None) -> None:
        """The other party ends a call (default: the active one, else the only one)."""
        if idx is None:
            cands = self._with(ACTIVE) or sorted(self.calls.values(), key=lambda c: c.idx)
            idx = cands[0].idx
        self.calls.pop(idx, None)
        self._after_release()
        self._bump()

    def set_battery(self, level: int) -> None:
        self._ciev("battchg", level)

    def set_signal(self, level: int) -> None:
        self._ciev("signal", level)

    def stat_of(self, number: str) -> int | None:
        for c in self.calls.values():
            if c.number == number:
                return c.stat
        return None
