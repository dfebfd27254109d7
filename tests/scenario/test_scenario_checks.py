"""Load-time checks of scenario files (issue 15 item 11): every error of a file is reported, each
with its line; ``dashboard: call`` method names, argument counts and types, reply names of
multi-value replies, ``expect_signal`` argument names and ``${saved}`` references are checked
before anything runs."""

from __future__ import annotations

import textwrap

import pytest

from dashbridge.simulator.scenario import ScenarioError, loads

HEAD = """\
version: 1
name: checks
world:
  phones:
    - {id: alice, name: Alice, address: "AA:BB:CC:DD:EE:01"}
steps:
"""


def _errors(steps: str) -> list[tuple[int | None, str]]:
    with pytest.raises(ScenarioError) as info:
        loads(HEAD + textwrap.dedent(steps), "s.yaml")
    return [(e.line, e.message) for e in info.value.errors]


def test_every_error_in_a_file_is_reported_with_its_line() -> None:
    errs = _errors("""\
        - dashboard: open_pairing_windw
        - phone: alice
          do: pair
          passkee: 123456
        - expect_signal: Phones1.PairingFinishd
        - dashboard: answer_prompt
          acept: true
        - wait: soon
        """)
    lines = [line for line, _ in errs]
    assert lines == [7, 10, 11, 13, 14], errs
    assert "unknown action" in errs[0][1] and "open_pairing_window" in errs[0][1]
    assert "unknown parameter passkee" in errs[1][1] and "did you mean passkey?" in errs[1][1]
    assert "has no signal PairingFinishd" in errs[2][1]
    assert "did you mean accept?" in errs[3][1]
    assert "duration" in errs[4][1]


def test_str_lists_every_error_as_file_line_message() -> None:
    with pytest.raises(ScenarioError) as info:
        loads(HEAD + "  - wait: soon\n  - wait: later\n", "s.yaml")
    assert str(info.value).splitlines() == [
        's.yaml:7: wait: expected a duration like "5s", "250ms", "3w", got "soon"',
        's.yaml:8: wait: expected a duration like "5s", "250ms", "3w", got "later"']


def test_world_errors_and_step_errors_together() -> None:
    text = HEAD.replace('address: "AA:BB:CC:DD:EE:01"', 'address: "nope", colour: red') + \
        "  - phone: alice\n    do: connect\n  - phone: bob\n    do: connect\n"
    with pytest.raises(ScenarioError) as info:
        loads(text, "s.yaml")
    msgs = [(e.line, e.message) for e in info.value.errors]
    # The broken phone's id still names it (no second error for "alice"); bob is unknown.
    assert len(msgs) == 2, msgs
    assert msgs[0][0] == 5 and "unknown key" in msgs[0][1]
    assert msgs[1][0] == 9 and 'no phone with id "bob"' in msgs[1][1]


def test_dashboard_call_argument_count_and_types_are_checked_at_load() -> None:
    errs = _errors("""\
        - dashboard: call
          method: Phones1.SetPriority
          args: ["AA:BB:CC:DD:EE:02"]
        - dashboard: call
          method: Contacts1.GetCallHistory
          args: ["", "ten"]
        - dashboard: call
          method: Contacts1.Lookup
          args: ["+441234"]
          result: {name: Mum, contact: 3}
        - dashboard: call
          method: Contacts1.Serch
          args: ["x", 1]
        """)
    assert [line for line, _ in errs] == [9, 12, 16, 18], errs
    assert "SetPriority takes 2 argument(s): address (s), position (u); got 1" in errs[0][1] or \
        "SetPriority takes 2 argument(s)" in errs[0][1]
    assert "argument 2, limit (u): expected a whole number" in errs[1][1]
    assert "replies {name, id}" in errs[2][1] and "no contact" in errs[2][1]
    assert "has no method Serch" in errs[3][1]


def test_references_must_be_saved_by_an_earlier_step() -> None:
    errs = _errors("""\
        - dashboard: answer_prompt
          prompt: ${prompt.prompt}
        - expect_signal: Phones1.PromptRequested
          save: prompt
        - expect_signal: Phones1.PromptCancelled
          args: {prompt: "${prompt.promt}", reason: timeout}
        - expect_signal: Phones1.PairingFinished
          after: finished
        - dashboard: call
          method: Contacts1.Lookup
          args: ["+44 7700 900123"]
          save: who
        - dashboard: call
          method: Contacts1.GetContact
          args: ["${who.id}"]
        - dashboard: call
          method: Contacts1.GetContact
          args: ["${who.name_}"]
        """)
    assert [line for line, _ in errs] == [8, 12, 14, 24], errs
    assert "${prompt.prompt} is not saved by an earlier step" in errs[0][1]
    assert "has no promt" in errs[1][1] and "prompt, kind, address" in errs[1][1]
    assert "after: no earlier step saves finished" in errs[2][1]
    assert "has no name_ (it has: name, id)" in errs[3][1]


def test_signal_argument_names_are_checked() -> None:
    errs = _errors("""\
        - expect_signal: Phones1.PairingFinished
          args: {adress: "AA:BB:CC:DD:EE:01", success: true}
        - expect_no_signal: Phones1.PromptRequested
          args: {knd: enter_pin}
          during: 1s
        - expect_signal: Phones1.PairingFinished
          args: {$not: {success: false}}
        """)
    assert [line for line, _ in errs] == [8, 10], errs
    assert "PairingFinished has no argument adress" in errs[0][1] and "did you mean address?" in errs[0][1]
    assert "has no argument knd" in errs[1][1]


def test_a_good_file_with_saved_values_loads() -> None:
    sc = loads(HEAD + textwrap.dedent("""\
        - dashboard: call
          method: Contacts1.Lookup
          args: ["+44 7700 900123"]
          result: {name: Mum, id: {$gt: 0}}
          save: who
        - dashboard: call
          method: Contacts1.GetContact
          args: ["${who.id}"]
          result: {Name: "${who.name}"}
        """), "s.yaml")
    assert len(sc.steps) == 2
