"""A bad scenario file gets an error naming the file, the line and what was expected — before any
world is built.  (Pure: no buses.)"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dashbridge.simulator.scenario import ScenarioError, load_file, loads

GOOD_HEAD = """\
version: 1
name: a scenario
"""

CASES = [
    # (file text, line the error must name, words the message must contain)
    ("", None, "empty"),
    ("version: 1\nname: x\nsteps: [\n", 4, "not valid YAML"),
    ("name: x\nsteps:\n  - wait: 1s\n", 1, "version: missing"),
    ("version: 2\nname: x\nsteps:\n  - wait: 1s\n", 1, "version: expected 1, got 2"),
    ("version: 1\nsteps:\n  - wait: 1s\n", 1, "name: missing"),
    (GOOD_HEAD + "stepz: []\n", 3, "unknown key stepz"),
    (GOOD_HEAD, 1, "steps: missing"),
    (GOOD_HEAD + "steps: []\n", 3, "at least one step"),
    (GOOD_HEAD + "steps:\n  - wait: soon\n", 4, 'expected a duration like "5s"'),
    (GOOD_HEAD + "steps:\n  - wait: 1s\n  - fly: away\n", 5, "expected one of"),
    (GOOD_HEAD + "steps:\n  - wait: 1s\n    dashboard: call\n", 4, "one kind per step"),
    (GOOD_HEAD + "steps:\n  - dashboard: teleport\n", 4, 'unknown action "teleport"'),
    (GOOD_HEAD + "steps:\n  - dashboard: call\n", 4, "method is required"),
    (GOOD_HEAD + "steps:\n  - dashboard: call\n    method: Ping\n", 5, "expected Interface.Member"),
    (GOOD_HEAD + "steps:\n  - dashboard: call\n    method: Daemon1.Ping\n    colour: red\n", 6,
     "unknown parameter colour"),
    (GOOD_HEAD + "steps:\n  - dashboard: call\n    method: Teleport1.Go\n", 5,
     "the daemon documents no interface org.dashbridge.Teleport1"),
    (GOOD_HEAD + "steps:\n  - expect_signal: Phones1.PairingFinishd\n", 4,
     "org.dashbridge.Phones1 has no signal PairingFinishd (it has: "),
    (GOOD_HEAD + "steps:\n  - expect_property: Daemon1.Ping\n    value: pong\n", 4,
     "org.dashbridge.Daemon1 has no property Ping (it has: Health, Status, Version)"),
    (GOOD_HEAD + "steps:\n  - expect_signal: Phones1.PairingFinished\n    within: 2 weeks\n", 5, "duration"),
    (GOOD_HEAD + "steps:\n  - expect_signal: Phones1.PairingFinished\n    args: {n: {$between: [1, 2]}}\n", 5,
     "unknown operator $between"),
    (GOOD_HEAD + "steps:\n  - expect_signal: Phones1.PairingFinished\n    args: {n: {$regex: '('}}\n", 5,
     "not a regular expression"),
    (GOOD_HEAD + "steps:\n  - expect_no_signal: Phones1.PairingFinished\n", 4, "during is required"),
    (GOOD_HEAD + "world:\n  config:\n    bluetooth:\n      prompt_timeout: quickly\nsteps:\n  - wait: 1s\n", 6,
     "world.config.bluetooth.prompt_timeout: expected a duration"),
    (GOOD_HEAD + "world:\n  config:\n    bluetooth:\n      colour: red\nsteps:\n  - wait: 1s\n", 6,
     "world.config.bluetooth.colour: unknown key"),
    (GOOD_HEAD + "world:\n  phones:\n    - name: A\nsteps:\n  - wait: 1s\n", 5, "address: missing"),
    (GOOD_HEAD + "world:\n  phones:\n    - {name: A, address: nope}\nsteps:\n  - wait: 1s\n", 5,
     'expected "AA:BB:CC:DD:EE:FF"'),
    (GOOD_HEAD + "world:\n  phones:\n    - {name: A, address: 'AA:BB:CC:DD:EE:01', profiles: [fax]}\n"
     "steps:\n  - wait: 1s\n", 5, 'unknown profile "fax"'),
    (GOOD_HEAD + "world:\n  phones:\n    - {name: A, address: 'AA:BB:CC:DD:EE:01', pairing: telepathy}\n"
     "steps:\n  - wait: 1s\n", 5, "expected one of numeric, legacy_pin, just_works"),
    (GOOD_HEAD + "world:\n  phones:\n    - {name: A, address: 'AA:BB:CC:DD:EE:01', wings: 2}\n"
     "steps:\n  - wait: 1s\n", 5, "unknown key"),
    (GOOD_HEAD + "world:\n  phones:\n    - {name: A, address: 'AA:BB:CC:DD:EE:01'}\n"
     "    - {name: B, address: 'aa:bb:cc:dd:ee:01'}\nsteps:\n  - wait: 1s\n", 6, "already used at line 5"),
    (GOOD_HEAD + "world:\n  phones:\n    - {id: a, name: A, address: 'AA:BB:CC:DD:EE:01'}\n"
     "steps:\n  - phone: b\n    do: pair\n", 7, 'no phone with id "b"'),
    (GOOD_HEAD + "world:\n  phones:\n    - {id: a, name: A, address: 'AA:BB:CC:DD:EE:01'}\n"
     "steps:\n  - phone: a\n", 7, "phone steps need do:"),
    (GOOD_HEAD + "world:\n  phones:\n    - {id: a, name: A, address: 'AA:BB:CC:DD:EE:01'}\n"
     "steps:\n  - phone: a\n    do: juggle\n", 8, 'unknown action "juggle"'),
]


@pytest.mark.parametrize(("text", "line", "words"), CASES)
def test_a_bad_file_names_file_line_and_what_was_expected(tmp_path: Path, text: str, line: int | None,
                                                          words: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_file(f)
    err = info.value
    assert err.filename == str(f)
    assert err.line == line, str(err)
    assert words in err.message, str(err)
    assert str(err).startswith(f"{f}:{line}: " if line else f"{f}: ")


def test_a_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: cannot read"):
        load_file(tmp_path / "nope.yaml")


def test_a_good_file_loads_with_lines_for_every_step() -> None:
    sc = loads(textwrap.dedent("""\
        version: 1
        name: good
        defaults: {within: 2s}
        world:
          config: {bluetooth: {prompt_timeout: 3s}}
          phones:
            - {id: alice, name: "Alice's Pixel", address: "aa:bb:cc:dd:ee:01", passkey: 123456}
        steps:
          - say: hello
          - wait: 250ms
          - expect_property: Daemon1.Status
            value: {$regex: "^ok"}
        """), "good.yaml")
    assert sc.within == 2.0
    assert sc.config == {"bluetooth": {"prompt_timeout": "3s"}}
    assert sc.phones[0].id == "alice" and sc.phones[0].phone.address == "AA:BB:CC:DD:EE:01"
    assert sc.phones[0].phone.passkey == 123456
    assert [(s.kind, s.line) for s in sc.steps] == [("say", 9), ("wait", 10), ("expect_property", 11)]
    assert sc.steps[1].params["wait"] == 0.25


def test_every_library_file_is_valid() -> None:
    from dashbridge.simulator.scenario import library

    files = library()
    assert files, "the scenario library is empty"
    for f in files:
        load_file(f)


def test_phone_data_in_the_file_becomes_the_phones_data() -> None:
    sc = loads(textwrap.dedent("""\
        version: 1
        name: data
        world:
          phones:
            - id: alice
              name: Alice
              address: "AA:BB:CC:DD:EE:01"
              contacts: {generated: 10, plus: [{name: Mum, number: "+44 7700 900123"}]}
              messages:
                - {type: sms, sender: "+447700900456", text: "See you at 8"}
                - {type: email, sender: "pat@example.com", subject: Minutes, text: "Attached."}
        steps:
          - wait: 0s
        """), "data.yaml")
    phone = sc.phones[0].phone
    assert phone.generated_contacts == 10
    from dashbridge.simulator.obex_pbap import book_for

    assert [c.fn for c in book_for(phone).contacts][-1] == "Mum"
    sms, mail = phone.messages
    assert (sms.type, sms.body, sms.handle) == ("SMS_GSM", "See you at 8", 1)
    assert mail.type == "EMAIL" and "Subject: Minutes" in mail.body and mail.handle == 2
    with pytest.raises(ScenarioError, match=r"data\.yaml:5: world\.phones\[0\]\.messages\[0\]\.type: expected sms"):
        loads("version: 1\nname: x\nworld:\n  phones:\n    - {name: A, address: 'AA:BB:CC:DD:EE:01', "
              "messages: [{type: fax}]}\nsteps:\n  - wait: 0s\n", "data.yaml")
