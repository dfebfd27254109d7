"""E-mail bodies (RFC 5322 / MIME, as carried in a MAP e-mail bMessage), with the standard
library's ``email`` package: headers, multipart walking, text/plain preferred, HTML reduced to
text, attachments listed (name, type, size) but never decoded or stored.

Contract: :func:`parse_email` never raises for any input; what it had to repair is in
``warnings``.  Input beyond ``max_input`` bytes is cut (``truncated``), the text kept is at most
``max_text`` characters, and at most ``MAX_PARTS`` MIME parts are looked at.  Pure: no I/O.
"""

from __future__ import annotations

import codecs
import email
import email.header
import email.policy
import email.utils
import html
import re
from dataclasses import dataclass, field
from email.message import Message
from html.parser import HTMLParser

MAX_INPUT = 2 * 1024 * 1024
MAX_TEXT = 64 * 1024
MAX_PARTS = 200
MAX_ATTACHMENTS = 50
MAX_LINKS = 50
MAX_HEADER = 998  # RFC 5322 line limit; longer header values are cut

# compat32 parses anything without raising and keeps raw headers; we decode headers ourselves
# with the modern policy's header registry only where it cannot fail (see _header()).
_POLICY = email.policy.compat32


@dataclass(frozen=True)
class Attachment:
    filename: str
    mime_type: str
    size: int  # decoded size estimate in bytes (from the encoded length); nothing is decoded


@dataclass(frozen=True)
class EmailBody:
    subject: str = ""
    sender_name: str = ""
    sender_address: str = ""
    to: tuple[str, ...] = ()
    date: str = ""  # as sent (RFC 5322 date), "" when absent
    text: str = ""
    html_only: bool = False  # the text was reduced from HTML (no text/plain part)
    attachments: tuple[Attachment, ...] = ()
    links: tuple[str, ...] = ()  # link targets from HTML anchors (text links stay in ``text``)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    truncated: bool = False


def looks_like_mime(raw: bytes | str) -> bool:
    """True if ``raw`` starts with an RFC 5322 header block (an MMS or e-mail body)."""
    head = raw[:2048] if isinstance(raw, str) else raw[:2048].decode("latin-1")
    first = head.split("\n", 1)[0]
    return bool(_HEADER_LINE.match(first)) and bool(
        re.search(r"(?im)^(content-type|mime-version|from|subject|date|to):", head))


_HEADER_LINE = re.compile(r"^[!-9;-~]{1,76}:")


def parse_email(raw: bytes | str, *, max_input: int = MAX_INPUT, max_text: int = MAX_TEXT) -> EmailBody:
    warnings: list[str] = []
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="replace")
    truncated = False
    if len(raw) > max_input:
        raw = raw[:max_input]
        truncated = True
        warnings.append(f"e-mail larger than {max_input} bytes; only the start was read")
    try:
        msg = email.message_from_bytes(raw, policy=_POLICY)
    except Exception as exc:  # the parser is lenient; this is belt and braces
        return EmailBody(text=_decode(raw, "utf-8", warnings)[:max_text], warnings=(f"unparseable: {exc}",),
                         truncated=truncated)
    if msg.defects:
        warnings.append("malformed MIME: " + ", ".join(sorted({type(d).__name__ for d in msg.defects}))[:200])

    subject = _header(msg, "Subject", warnings)
    from_raw = _header(msg, "From", warnings)
    sender_name, sender_address = email.utils.parseaddr(from_raw)
    to = tuple(a for _n, a in email.utils.getaddresses([_header(msg, "To", warnings)]) if a)[:32]
    date = _header(msg, "Date", warnings)

    plain: list[str] = []
    htmls: list[str] = []
    attachments: list[Attachment] = []
    for n, part in enumerate(msg.walk()):
        if n >= MAX_PARTS:
            warnings.append(f"more than {MAX_PARTS} MIME parts; the rest ignored")
            break
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        filename = _filename(part, warnings)
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        if ctype.startswith("multipart/"):
            # A multipart whose boundary never came: its text is still the body.
            plain.append(_part_text(part, warnings))
            continue
        is_attachment = disposition == "attachment" or (bool(filename) and disposition != "inline")
        if is_attachment or ctype not in ("text/plain", "text/html"):
            if len(attachments) < MAX_ATTACHMENTS:
                attachments.append(Attachment(filename or "", ctype, _size(part)))
            continue
        text = _part_text(part, warnings)
        (plain if ctype == "text/plain" else htmls).append(text)

    links: list[str] = []
    html_only = False
    if plain:
        body = "\n\n".join(t.strip("\r\n") for t in plain)
        for h in htmls:  # links in an HTML alternative are still destinations
            links.extend(html_to_text(h, max_text)[1])
    elif htmls:
        html_only = True
        texts = []
        for h in htmls:
            t, ls = html_to_text(h, max_text)
            texts.append(t)
            links.extend(ls)
        body = "\n\n".join(texts)
    else:
        body = ""
    body = clean_text(body.replace("\r\n", "\n"))
    if len(body) > max_text:
        body = body[:max_text]
        truncated = True
        warnings.append(f"text longer than {max_text} characters cut")
    uniq = list(dict.fromkeys(links))[:MAX_LINKS]
    return EmailBody(
        subject=subject,
        sender_name=sender_name[:MAX_HEADER],
        sender_address=sender_address[:MAX_HEADER],
        to=to,
        date=date,
        text=body,
        html_only=html_only,
        attachments=tuple(attachments),
        links=tuple(uniq),
        warnings=tuple(dict.fromkeys(warnings))[:16],
        truncated=truncated,
    )


def _header(msg: Message, name: str, warnings: list[str]) -> str:
    """A header value with RFC 2047 encoded words decoded; never raises."""
    value = msg.get(name)
    if value is None:
        return ""
    raw = str(value)
    try:
        parts = email.header.decode_header(raw)
        out = []
        for chunk, cs in parts:
            if isinstance(chunk, bytes):
                out.append(_decode(chunk, cs or "ascii", warnings))
            else:
                out.append(chunk)
        text = "".join(out)
    except Exception:
        warnings.append(f"undecodable {name} header")
        text = raw
    text = " ".join(text.split())
    return "".join(ch for ch in text if ch >= " ")[:MAX_HEADER]


def _filename(part: Message, warnings: list[str]) -> str:
    try:
        name = part.get_filename()
    except Exception:
        warnings.append("undecodable attachment name")
        return "attachment"
    if not name:
        return ""
    name = str(name)
    if "=?" in name:
        try:
            name = "".join(
                c.decode(cs or "ascii", errors="replace") if isinstance(c, bytes) else c
                for c, cs in email.header.decode_header(name))
        except Exception:
            pass
    return "".join(ch for ch in name if ch >= " " and ch not in "/\\")[:255]


def _size(part: Message) -> int:
    payload = part.get_payload(decode=False)
    n = len(payload) if isinstance(payload, (str, bytes)) else 0
    cte = (part.get("Content-Transfer-Encoding") or "").strip().lower()
    if cte == "base64":
        return n * 3 // 4
    return n


def _part_text(part: Message, warnings: list[str]) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        warnings.append("undecodable transfer encoding")
        payload = None
    if not isinstance(payload, bytes):
        p = part.get_payload(decode=False)
        payload = p.encode("utf-8", errors="replace") if isinstance(p, str) else b""
    charset = part.get_content_charset() or "us-ascii"
    return _decode(payload, charset, warnings)


def _decode(data: bytes, charset: str, warnings: list[str]) -> str:
    cs = charset.strip().lower()
    if cs in ("us-ascii", "ascii", "unknown-8bit", "x-unknown", ""):
        # Many mailers say us-ascii and send UTF-8.
        cs = "utf-8"
    try:
        info = codecs.lookup(cs)
        if not info._is_text_encoding:
            raise LookupError(cs)
    except LookupError:
        # Unknown label: UTF-8 if the bytes are valid UTF-8, else Windows-1252 (what mislabelled
        # Western mail usually is).
        try:
            text = data.decode("utf-8")
            used = "UTF-8"
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")
            used = "Windows-1252"
        warnings.append(f"unknown charset {charset[:40]!r}, read as {used}")
        return text
    try:
        return data.decode(info.name, errors="replace")
    except Exception:  # a codec that fails on errors="replace" (rare)
        warnings.append(f"charset {charset[:40]!r} failed, read as UTF-8")
        return data.decode("utf-8", errors="replace")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Text fit for a dashboard: control characters (other than newline and tab) removed."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


# ---------------------------------------------------------------------------------------------
# HTML -> text
# ---------------------------------------------------------------------------------------------

_BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
          "blockquote", "pre", "hr", "section", "article", "header", "footer", "address", "dd", "dt"}
_SKIP = {"script", "style", "head", "title", "template", "noscript", "svg"}


class _Reducer(HTMLParser):
    def __init__(self, max_text: int) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.size = 0
        self.max_text = max_text
        self.skip = 0
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag in _BLOCK:
            self._add("\n")
        elif tag == "td":
            self._add(" ")
        if tag == "li":
            self._add("• ")
        if tag == "a" and len(self.links) < MAX_LINKS:
            for k, v in attrs:
                if k == "href" and v and re.match(r"(?i)(https?:|geo:)", v.strip()):
                    self.links.append(v.strip()[:2048])

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self._add("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self._add(data)

    def _add(self, s: str) -> None:
        if self.size < self.max_text:
            self.out.append(s)
            self.size += len(s)


def html_to_text(markup: str, max_text: int = MAX_TEXT) -> tuple[str, list[str]]:
    """Visible text of an HTML document (scripts and styles dropped, blocks on their own lines,
    whitespace collapsed) and the http(s)/geo link targets of its anchors."""
    r = _Reducer(max_text)
    try:
        r.feed(markup[: max_text * 8])
        r.close()
    except Exception:  # HTMLParser is lenient; belt and braces
        return html.unescape(re.sub(r"<[^>]*>", " ", markup[:max_text])), r.links
    text = "".join(r.out)
    lines = [" ".join(line.split()) for line in text.replace("\xa0", " ").split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()[:max_text], r.links
