"""Prompts end exactly once: answered, timed out, superseded or cancelled; stale answers are refused."""

from __future__ import annotations

import asyncio

import pytest

from dashbridge.daemon.bluetooth.prompts import Outcome, Prompt, PromptBroker
from dashbridge.daemon.errors import InvalidInput, NotFound

A = "AA:BB:CC:DD:EE:01"


def _broker() -> tuple[PromptBroker, list[tuple[str, int, str]]]:
    b = PromptBroker()
    events: list[tuple[str, int, str]] = []
    b.events.requested.append(lambda p: events.append(("requested", p.id, p.kind)))
    b.events.cancelled.append(lambda p, why: events.append(("cancelled", p.id, why)))
    return b, events


async def test_answer_then_stale_answer() -> None:
    b, events = _broker()
    p = b.create("confirm_passkey", A, "Ada", "123456", 5.0)
    b.answer(p.id, True)
    assert await b.wait(p) == Outcome(True, "", "answered")
    with pytest.raises(NotFound):
        b.answer(p.id, False)
    with pytest.raises(NotFound):
        b.answer(999, True)
    assert events == [("requested", 1, "confirm_passkey")]


async def test_timeout_rejects_and_tells_the_dashboard() -> None:
    b, events = _broker()
    p = b.create("authorize_pairing", A, "Ada", "", 0.05)
    async with asyncio.timeout(2):
        outcome = await b.wait(p)
    assert outcome == Outcome(False, "", "timeout")
    assert events[-1] == ("cancelled", p.id, "timeout")
    assert b.open == []


async def test_a_newer_request_supersedes_the_older() -> None:
    b, events = _broker()
    old = b.create("confirm_passkey", A, "Ada", "111111", 5.0)
    new = b.create("confirm_passkey", A, "Ada", "222222", 5.0)
    assert (await b.wait(old)).reason == "superseded"
    assert [p.id for p in b.open] == [new.id] and new.id > old.id
    assert ("cancelled", old.id, "superseded") in events


async def test_entry_prompts_validate_the_value() -> None:
    b, _ = _broker()
    p = b.create("enter_pin", A, "Ada", "", 5.0)
    with pytest.raises(InvalidInput):
        b.answer(p.id, True, "12 34")
    assert b.open == [p]
    b.answer(p.id, True, " 1234 ")
    assert (await b.wait(p)).value == "1234"
    q = b.create("enter_passkey", A, "Ada", "", 5.0)
    with pytest.raises(InvalidInput):
        b.answer(q.id, True, "1234567")
    b.answer(q.id, False, "")
    assert (await b.wait(q)).accepted is False


async def test_display_prompts_need_no_answer_and_end_with_the_pairing() -> None:
    b, events = _broker()
    p: Prompt = b.create("display_passkey", A, "Ada", "000042", 5.0)
    with pytest.raises(InvalidInput):
        b.answer(p.id, True)
    assert b.end_for(A, "pairing_done") == 1
    assert events[-1] == ("cancelled", p.id, "pairing_done")


async def test_a_cancelled_waiter_ends_its_prompt() -> None:
    b, _ = _broker()
    p = b.create("confirm_passkey", A, "Ada", "123456", 5.0)
    waiter = asyncio.ensure_future(b.wait(p))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert b.open == []
