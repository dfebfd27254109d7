"""The bMessage parser on the written corpus (tests/data/messages/*.bmsg): what a dashboard would
show for each phone-style file, and what was reported for the broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashbridge.profiles.map import bmessage

DATA = Path(__file__).parents[1] / "data" / "messages"


def load(name: str, **kw: bool) -> bmessage.BMessage:
    return bmessage.parse((DATA / name).read_bytes(), **kw)


def test_android_sms() -> None:
    m = load("android_sms.bmsg")
    assert (m.type, m.status, m.folder) == ("SMS_GSM", "UNREAD", "TELECOM/MSG/INBOX")
    assert m.sender is not None and (m.sender.display_name, m.sender.address) == ("Mum", "+447700900123")
    assert m.text == "Running late, see you at 8! 😀 https://maps.app.goo.gl/Xy12Ab"
    assert m.warnings == ()


def test_iphone_vcard30_name_from_n() -> None:
    m = load("iphone_sms.bmsg")
    assert m.status == "READ" and m.encoding == "8BIT" and m.language == "ENGLISH"
    assert m.sender is not None and m.sender.display_name == "Johnny Appleseed"
    assert m.sender.tels == ("+15551234567",)


def test_quoted_printable_name_split_inside_a_utf8_sequence() -> None:
    m = load("qp_name.bmsg")
    assert m.sender is not None and m.sender.display_name == "Jürgen Müller"
    assert m.text == "Grüße aus Köln"


def test_fractioned_message_keeps_both_parts() -> None:
    m = load("two_parts.bmsg")
    assert m.part_id == 3 and len(m.parts) == 2
    assert m.text == "This is the first half of a long message, and this is the second half."
    assert m.warnings == ()


def test_forwarded_email_nested_envelopes() -> None:
    m = load("email_forwarded.bmsg")
    assert m.type == "EMAIL" and len(m.envelopes) == 2
    assert m.recipients[0].emails == ("driver@example.com",)
    assert m.envelopes[1][0].emails == ("orig@example.org",)
    assert m.text.startswith("From: Alice Example <alice@example.com>\r\n")
    assert m.warnings == ()


def test_mms_keeps_its_mime_body() -> None:
    m = load("mms.bmsg")
    assert m.type == "MMS" and "Content-Type: multipart/related" in m.text


@pytest.mark.parametrize(("name", "text", "warning"), [
    ("lf_only.bmsg", "Running late, see you at 8! 😀 https://maps.app.goo.gl/Xy12Ab", "LENGTH 85 does not match"),
    ("wrong_length.bmsg", "Length lies", "LENGTH 4 does not match"),
    ("unknown_charset.bmsg", "Café crème", "unknown charset 'X-UNKNOWN-9'"),
    ("native_charset.bmsg", "0791448720003023240DD0E474D81C0EBB010000111011315214000BE474D81C0EBB5DE3771B",
     "NATIVE charset not decoded"),
    ("missing_ends.bmsg", "Meet at 1 Infinite Loop, Cupertino", "missing END:BMSG"),
])
def test_repaired_and_reported(name: str, text: str, warning: str) -> None:
    m = load(name)
    assert m.text == text
    assert any(warning in w for w in m.warnings), m.warnings


def test_truncated_file_gives_what_arrived() -> None:
    m = load("truncated.bmsg", truncated=True)
    assert m.truncated and m.text == "Running late, see"
    assert m.sender is not None and m.sender.address == "+447700900123"
    cut = load("truncated.bmsg")  # the same bytes, not announced as cut: reported
    assert cut.text == "Running late, see" and "missing END:MSG" in cut.warnings


def test_garbage_is_an_error_not_a_crash() -> None:
    with pytest.raises(bmessage.BMessageError):
        load("garbage.bin")


def test_every_corpus_file_round_trips_through_the_serializer() -> None:
    for f in sorted(DATA.glob("*.bmsg")):
        m = bmessage.parse(f.read_bytes(), truncated=f.name == "truncated.bmsg")
        if m.charset != "UTF-8":
            continue
        again = bmessage.parse(bmessage.serialize(m))
        assert again == m, f.name
        assert again.warnings == (), f.name
