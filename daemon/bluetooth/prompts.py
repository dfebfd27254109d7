"""Pairing prompts: every agent request becomes a prompt the dashboard answers under a deadline.

A prompt has a number (never reused while the daemon runs), a kind, the phone's address and name,
a code to show (passkey, PIN or service UUID) and a deadline.  It ends exactly once: answered,
timed out, cancelled by bluetoothd, superseded by a newer request for the same phone, or dropped
because bluetoothd went away.  Answers to a prompt that has ended get a clear error (stale answer).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..errors import InvalidInput, NotFound
from ..logs import redact_address
from .model import parse_passkey, parse_pin

log = logging.getLogger(__name__)

PromptKind = Literal[
    "confirm_passkey",  # numeric comparison: show the passkey, ask yes/no (RequestConfirmation)
    "authorize_pairing",  # just-works pairing from a phone: yes/no (RequestAuthorization)
    "enter_pin",  # legacy phone: the driver types the PIN (RequestPinCode)
    "enter_passkey",  # the driver types the passkey the phone shows (RequestPasskey)
    "display_pin",  # show the PIN to type on the phone (DisplayPinCode); no answer
    "display_passkey",  # show the passkey to type on the phone (DisplayPasskey); no answer
    "authorize_service",  # a phone wants a service of the car (AuthorizeService): yes/no
]
ANSWERABLE: frozenset[str] = frozenset({"confirm_passkey", "authorize_pairing", "enter_pin", "enter_passkey",
                                        "authorize_service"})

EndReason = Literal["answered", "timeout", "cancelled", "superseded", "bluetooth_gone", "pairing_done"]


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    value: str  # the PIN / passkey typed for enter_* prompts
    reason: EndReason


@dataclass(eq=False)
class Prompt:
    id: int
    kind: str
    address: str
    name: str
    code: str
    timeout: float
    deadline: float  # loop time
    future: asyncio.Future[Outcome] = field(repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def answerable(self) -> bool:
        return self.kind in ANSWERABLE

    def seconds_left(self, now: float) -> int:
        return max(0, round(self.deadline - now))


class PromptEvents:
    """What the API layer hears about prompts."""

    def __init__(self) -> None:
        self.requested: list[Callable[[Prompt], None]] = []
        self.cancelled: list[Callable[[Prompt, str], None]] = []


class PromptBroker:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._open: dict[int, Prompt] = {}
        self.events = PromptEvents()

    @property
    def open(self) -> list[Prompt]:
        return sorted(self._open.values(), key=lambda p: p.id)

    def create(self, kind: str, address: str, name: str, code: str, timeout: float) -> Prompt:
        """Open a prompt.  An open prompt of the same kind for the same phone is superseded (the
        newer request is the live one; bluetoothd has only one request per agent outstanding)."""
        for old in [p for p in self._open.values() if p.address == address and p.kind == kind]:
            log.warning("prompt %d (%s) for %s superseded by a new request", old.id, old.kind,
                        redact_address(address))
            self.end(old.id, Outcome(False, "", "superseded"))
        loop = asyncio.get_running_loop()
        prompt = Prompt(next(self._ids), kind, address, name, code, timeout, loop.time() + timeout,
                        loop.create_future())
        prompt.timer = loop.call_later(timeout, self._expire, prompt.id)
        self._open[prompt.id] = prompt
        log.info("prompt %d: %s for %s (%.0fs)", prompt.id, kind, redact_address(address), timeout)
        for cb in list(self.events.requested):
            _safe(cb, prompt)
        return prompt

    def _expire(self, prompt_id: int) -> None:
        prompt = self._open.get(prompt_id)
        if prompt is not None:
            log.info("prompt %d (%s) not answered in %.0fs: rejected", prompt.id, prompt.kind, prompt.timeout)
            self.end(prompt_id, Outcome(False, "", "timeout"))

    def answer(self, prompt_id: int, accept: bool, value: str = "") -> None:
        """The dashboard's answer.  Raises NotFound for a prompt that has ended (or never was)
        and InvalidInput for a malformed PIN/passkey; neither changes anything."""
        prompt = self._open.get(prompt_id)
        if prompt is None:
            log.info("answer to prompt %d ignored: not open (stale or unknown)", prompt_id)
            raise NotFound(f"prompt {prompt_id} is not open (it was answered, timed out or cancelled)")
        if not prompt.answerable:
            raise InvalidInput(f"prompt {prompt_id} ({prompt.kind}) only shows a code; it needs no answer")
        typed = ""
        if accept and prompt.kind == "enter_pin":
            pin = parse_pin(value)
            if pin is None:
                raise InvalidInput("a PIN is 1 to 16 letters or digits")
            typed = pin
        elif accept and prompt.kind == "enter_passkey":
            pk = parse_passkey(value)
            if pk is None:
                raise InvalidInput("a passkey is up to 6 digits")
            typed = str(pk)
        self.end(prompt_id, Outcome(accept, typed, "answered"))

    def end(self, prompt_id: int, outcome: Outcome) -> bool:
        prompt = self._open.pop(prompt_id, None)
        if prompt is None:
            return False
        if prompt.timer is not None:
            prompt.timer.cancel()
        if not prompt.future.done():
            prompt.future.set_result(outcome)
        if outcome.reason != "answered":
            for cb in list(self.events.cancelled):
                _safe(cb, prompt, outcome.reason)
        return True

    def end_for(self, address: str | None, reason: EndReason) -> int:
        """End every open prompt (for one phone, or all with ``address=None``)."""
        n = 0
        for p in self.open:
            if address is None or p.address == address:
                n += self.end(p.id, Outcome(False, "", reason))
        return n

    async def wait(self, prompt: Prompt) -> Outcome:
        """The outcome; the prompt's own timer guarantees this returns by its deadline."""
        try:
            return await asyncio.shield(prompt.future)
        except asyncio.CancelledError:
            # Our caller (the agent method) was cancelled, e.g. the bus connection closed.
            self.end(prompt.id, Outcome(False, "", "cancelled"))
            raise

    def seconds_left(self, prompt: Prompt) -> int:
        return prompt.seconds_left(asyncio.get_running_loop().time())


def _safe(cb: Callable[..., None], *args: object) -> None:
    try:
        cb(*args)
    except Exception:
        log.exception("prompt listener failed")
