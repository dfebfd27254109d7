"""A phone with a history from files (issue 15 item 14): call history as PBAP call-history vCards
(ich/och/mch with X-IRMC-CALL-DATETIME) and messages as bMessages or a YAML list, shown to the
dashboard through Contacts1.GetCallHistory and Messages1."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashbridge.simulator import obex_pbap
from dashbridge.simulator.phone import VirtualPhone, load_messages
from dashbridge.simulator.scenario import ScenarioError, load_file, loads, run_scenario
from dashbridge.simulator.vcards import load_call_history, render_card

DUMP = Path(__file__).resolve().parent.parent / "data" / "phone_dump"

SCENARIO = f"""\
version: 1
name: A phone with a history from files shows its calls and messages on the dashboard
world:
  phones:
    - id: alice
      name: "Alice's Pixel"
      address: "AA:BB:CC:DD:EE:01"
      bonded: true
      contacts: [{{name: Mum, number: "+44 7700 900123"}}]
      history: {DUMP / "history"}
      messages: {DUMP / "messages"}
steps:
  - expect_signal: Contacts1.SyncStateChanged
    args: {{phone: "AA:BB:CC:DD:EE:01", state: {{State: synced}}}}
    since: start
    within: 20s
  - dashboard: call
    method: Contacts1.GetCallHistory
    args: ["", 10]
    result:
      - {{Kind: missed, Number: "07700900999", Time: {{$regex: "^2026-11-03T09:00"}}}}
      - {{Kind: received, Name: Mum, Number: "+447700900123", Time: {{$regex: "^2026-11-03T08:15"}}}}
      - {{Kind: dialed, Name: Office, Number: "+442079460958"}}
      - {{Kind: received, Name: "", Number: "+441632960001"}}
  - expect_property: Messages1.Phones
    value: {{"AA:BB:CC:DD:EE:01": [{{$in: [ready, polling]}}, {{$any: true}}]}}
    within: 20s
  - dashboard: call
    method: Messages1.List
    args: [{{}}]
    result:
      $len: 2
      $all:
        - {{$contains: {{type: sms, sender: "+447700900123", read: false, preview: {{$contains: Running late}}}}}}
        - {{$contains: {{type: sms, sender: "+441632960777", read: true, preview: {{$contains: ready for collection}}}}}}
"""


async def test_a_scenario_phone_with_history_and_messages_from_files(tmp_path: Path) -> None:
    f = tmp_path / "history.yaml"
    f.write_text(SCENARIO)
    r = await run_scenario(load_file(f))
    assert r.ok, f"{r.error}\n{r.details}"


def test_call_history_files_are_read_as_pbap_phones_send_them() -> None:
    calls = load_call_history(DUMP / "history")
    assert [(c.kind, c.number, c.when) for c in calls] == [
        ("missed", "07700900999", "20261103T090000"),  # no kind in the card: the file's (mch)
        ("received", "+447700900123", "20261103T081500"),
        ("dialed", "+442079460958", "20261102T120000"),  # TYPE=DIALED (iPhone style)
        ("received", "+441632960001", "20261101T174200")]
    # Served again with exactly one X-IRMC-CALL-DATETIME, as the phone sent it.
    card = render_card(calls[1].contact, calls[1], "3.0", "android")
    assert card.count(b"X-IRMC-CALL-DATETIME") == 1 and b"RECEIVED:20261103T081500" in card
    # One file with every kind (a cch dump).
    one = load_call_history(Path(__file__).resolve().parent.parent / "data" / "vcards" / "callhistory_cch.vcf")
    assert one and {c.kind for c in one} <= {"received", "dialed", "missed"}
    phone = VirtualPhone("AA:BB:CC:DD:EE:09", history_from=str(DUMP / "history"))
    book = obex_pbap.book_for(phone)
    assert [len(book.entries(x)) for x in ("ich", "och", "mch", "cch")] == [2, 1, 1, 4]


def test_messages_from_a_yaml_list_or_bmessages() -> None:
    listed = load_messages(DUMP / "messages.yaml")
    assert [(m.type, m.sender, m.read) for m in listed] == [("SMS_GSM", "+447700900123", False),
                                                            ("EMAIL", "pat@example.com", True)]
    assert "Subject: Minutes" in listed[1].body
    bm = load_messages(DUMP / "messages", first_handle=7)
    assert [(m.handle, m.folder, m.sender, m.sender_name, m.read) for m in bm] == [
        (7, "inbox", "+447700900123", "Mum", False), (8, "inbox", "+441632960777", "Garage", True)]
    # On a phone: added after its own messages; a copy of the phone does not add them twice.
    import dataclasses

    p = VirtualPhone("AA:BB:CC:DD:EE:09", messages_from=str(DUMP / "messages.yaml"))
    assert len(p.messages) == 2 and p.messages_from is None
    assert len(dataclasses.replace(p).messages) == 2


def test_bad_history_or_message_files_are_load_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.vcf"
    bad.write_text("BEGIN:VCARD\r\nVERSION:3.0\r\nTEL:1\r\nEND:VCARD\r\n")
    msgs = tmp_path / "m.yaml"
    msgs.write_text("- {type: fax, text: hi}\n")
    text = f"""\
version: 1
name: bad files
world:
  phones:
    - {{id: a, name: A, address: "AA:BB:CC:DD:EE:01", history: {bad}}}
    - {{id: b, name: B, address: "AA:BB:CC:DD:EE:02", messages: {msgs}}}
    - {{id: c, name: C, address: "AA:BB:CC:DD:EE:03", history: nowhere/}}
steps:
  - wait: 0s
"""
    with pytest.raises(ScenarioError) as info:
        loads(text, tmp_path / "s.yaml")
    msgs_ = [(e.line, e.message) for e in info.value.errors]
    assert [line for line, _ in msgs_] == [5, 6, 7], msgs_
    assert "does not say RECEIVED, DIALED or MISSED" in msgs_[0][1]
    assert "message 1: type: expected sms, mms or email" in msgs_[1][1]
    assert "no such file or directory" in msgs_[2][1]
