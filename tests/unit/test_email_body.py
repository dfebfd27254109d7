"""E-mail bodies: the written corpus (tests/data/messages/*.eml) and properties: text/plain is
preferred, HTML is reduced to readable text, attachments are listed and never taken as text,
unknown charsets and broken MIME are reported, any input is handled within bounds."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dashbridge.profiles.map.email_body import Attachment, html_to_text, looks_like_mime, parse_email

DATA = Path(__file__).parents[1] / "data" / "messages"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_alternative_prefers_plain_and_keeps_html_links() -> None:
    e = parse_email(load("alternative.eml"))
    assert e.subject == "Plans" and e.sender_name == "Smith, Jane" and e.sender_address == "jane@example.com"
    assert e.to == ("driver@example.com", "bob@example.org")
    assert e.text == "Dinner at Dishoom, 12 Upper St Martin's Lane, London WC2H 9FB – 7pm"
    assert not e.html_only and e.warnings == ()
    assert e.links == ("https://www.google.com/maps/place/Dishoom/@51.5124,-0.1269,17z",)


def test_html_only_is_reduced_to_text() -> None:
    e = parse_email(load("html_only.eml"))
    assert e.html_only
    assert e.text == "Booking confirmed\n\nHôtel du Louvre\nPlace André Malraux\n\nCheck-in 15:00"
    assert "alert" not in e.text and "color" not in e.text and "<" not in e.text


def test_attachments_are_listed_not_read() -> None:
    e = parse_email(load("attachments.eml"))
    assert e.text == "Tickets attached."
    assert e.attachments == (Attachment("ticket 1.pdf", "application/pdf", 54), Attachment("map.png", "image/png", 9),
                             Attachment("notes.txt", "text/plain", 13))


def test_unknown_charset_falls_back_and_is_reported() -> None:
    e = parse_email(load("unknown_charset.eml"))
    assert e.subject == "Hello" and e.text == "Grüße"
    assert any("x-martian" in w and "Windows-1252" in w for w in e.warnings)


def test_broken_mime_keeps_the_text() -> None:
    e = parse_email(load("broken_boundary.eml"))
    assert e.text == "This text has no boundary at all." and e.warnings
    e = parse_email(load("no_headers.eml"))
    assert "just some text" in e.text


def test_mime_sniffing() -> None:
    assert looks_like_mime(load("alternative.eml"))
    assert not looks_like_mime("Running late: see you at 8")
    assert not looks_like_mime("Note: this is not a header block")


def test_ten_megabytes_are_cut_quickly() -> None:
    body = ("x" * 76 + "\r\n") * (10 * 1024 * 1024 // 78)
    raw = "From: a@example.com\r\nSubject: big\r\nContent-Type: text/plain\r\n\r\n" + body
    t0 = time.perf_counter()
    e = parse_email(raw)
    assert time.perf_counter() - t0 < 2.0
    assert e.truncated and e.subject == "big" and len(e.text) <= 64 * 1024
    assert any("larger than" in w for w in e.warnings)


def test_html_entities_blocks_and_links() -> None:
    text, links = html_to_text('<div>A&amp;B&nbsp;C</div><ul><li>one</li><li>two</li></ul>'
                               '<a href="https://maps.apple.com/?q=x">x</a><a href="javascript:alert(1)">y</a>')
    assert text == "A&B C\n\n• one\n\n• two\n\nxy"
    assert links == ["https://maps.apple.com/?q=x"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_any_bytes_are_handled(raw: bytes) -> None:
    e = parse_email(raw)
    assert isinstance(e.text, str) and len(e.warnings) <= 16
    assert all(c in "\n\t" or c >= " " for c in e.text)


parts = st.sampled_from([
    "Content-Type: multipart/mixed; boundary=X\r\n", "Content-Type: text/html; charset=klingon\r\n",
    "Content-Transfer-Encoding: base64\r\n", "Content-Transfer-Encoding: quoted-printable\r\n",
    "Content-Disposition: attachment; filename*=utf-8''%E2%9C%93.pdf\r\n", "Subject: =?utf-8?b?!!!?=\r\n",
    "From: <<<@>>>\r\n", "\r\n", "--X\r\n", "--X--\r\n", "<p>hi <a href='geo:1,2'>", "=C3=\r\n", "QUJD\r\n",
    "<script>", "</style>", "&#xFFFFFFFF;", "text\r\n"])


@settings(max_examples=300, deadline=None)
@given(st.lists(parts, max_size=40))
def test_mime_shaped_noise_is_handled(chunks: list[str]) -> None:
    e = parse_email("".join(chunks))
    assert isinstance(e.text, str)
