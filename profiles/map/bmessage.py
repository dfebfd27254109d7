"""bMessage (MAP ``x-bt/message``): a pure, total parser and a serializer.

Format (reference §3.2)::

    BEGIN:BMSG / VERSION / STATUS / TYPE / FOLDER / originator vCard(s)
    BEGIN:BENV  recipient vCard(s)  [nested BEGIN:BENV ...]
      BEGIN:BBODY  [PARTID] [ENCODING] CHARSET [LANGUAGE] LENGTH
        BEGIN:MSG <content> END:MSG  (one or more)
      END:BBODY
    END:BENV
    END:BMSG

``LENGTH`` is the byte count of every ``BEGIN:MSG<CRLF>`` + content + ``<CRLF>END:MSG<CRLF>``
block together (content + 22 bytes for a single part), as the Android/CodeAurora MAP builder counts
it.  Phones get it wrong; the parser trusts LENGTH only when it lands exactly on an ``END:MSG``
line followed by ``END:BBODY`` and otherwise falls back to the ``END:MSG`` markers, with a warning.

Contract: :func:`parse` returns a :class:`BMessage` (with ``warnings`` for everything it had to
repair: wrong LENGTH, unknown charset, missing END lines, a truncated file) or raises
:class:`BMessageError` (and nothing else) when the input is not a bMessage at all.  Memory and
time are bounded by the input size and the ``MAX_*`` limits below.  No I/O; imports only the
standard library.

The vCards inside a bMessage are tiny (a name and a number or an address), so they are read by
the small reader here rather than the PBAP phonebook parser, which is built for 5,000-card dumps.
"""

from __future__ import annotations

import codecs
import quopri
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# --- limits --------------------------------------------------------------------------------------
MAX_BYTES = 16 * 1024 * 1024  # a bMessage larger than this is refused (callers read a prefix)
MAX_VCARDS = 16  # per originator list / per envelope level; more are skipped with a warning
MAX_VCARD_LINES = 64
MAX_ENVELOPE_DEPTH = 4  # forwarded e-mail nests BENV; deeper nesting is refused
MAX_PARTS = 64  # MSG blocks in one BBODY
MAX_HEADER_LINE = 4096  # header/vCard lines are cut here
MAX_WARNINGS = 16

MSG_BEGIN = b"BEGIN:MSG\r\n"
MSG_END = b"\r\nEND:MSG\r\n"
MSG_OVERHEAD = len(MSG_BEGIN) + len(MSG_END)  # 22

TYPES = ("EMAIL", "SMS_GSM", "SMS_CDMA", "MMS", "IM")
STATUSES = ("READ", "UNREAD")


class BMessageError(ValueError):
    """The input is not a usable bMessage (not one, too large, or nested too deep)."""


@dataclass(frozen=True)
class VCard:
    """The parts of a bMessage vCard we use: names, numbers, e-mail addresses."""

    version: str = "2.1"
    name: str = ""  # N, components joined by ";" as sent (e.g. "Doe;John")
    formatted_name: str = ""  # FN
    tels: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()

    @property
    def display_name(self) -> str:
        """FN, else N as "Given Family", else ""."""
        if self.formatted_name.strip():
            return self.formatted_name.strip()
        parts = [p.strip() for p in self.name.split(";")]
        if len(parts) >= 2:
            ordered = [parts[3] if len(parts) > 3 else "", parts[1], parts[2] if len(parts) > 2 else "",
                       parts[0], parts[4] if len(parts) > 4 else ""]
            return " ".join(p for p in ordered if p)
        return parts[0] if parts else ""

    @property
    def address(self) -> str:
        """The first number, else the first e-mail address, else ""."""
        if self.tels:
            return self.tels[0]
        if self.emails:
            return self.emails[0]
        return ""


@dataclass(frozen=True)
class BMessage:
    version: str = "1.0"
    status: str = "UNREAD"
    type: str = "SMS_GSM"
    folder: str = ""
    originators: tuple[VCard, ...] = ()
    # Recipient vCards per envelope level, outermost first (forwarded e-mail nests envelopes).
    envelopes: tuple[tuple[VCard, ...], ...] = ((),)
    charset: str = "UTF-8"
    encoding: str = ""
    language: str = ""
    part_id: int | None = None
    parts: tuple[str, ...] = ()
    # What the parser had to repair; empty for a well-formed message.
    warnings: tuple[str, ...] = field(default=(), compare=False)
    truncated: bool = field(default=False, compare=False)

    @property
    def recipients(self) -> tuple[VCard, ...]:
        return self.envelopes[0] if self.envelopes else ()

    @property
    def text(self) -> str:
        """All MSG parts in order (a fractioned message's parts belong together)."""
        return "".join(self.parts)

    @property
    def sender(self) -> VCard | None:
        return self.originators[0] if self.originators else None


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


class _Lines:
    """Line cursor over bytes, tolerant of LF-only line ends; positions are byte offsets."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def next(self) -> tuple[int, bytes] | None:
        if self.pos >= len(self.data):
            return None
        start = self.pos
        nl = self.data.find(b"\n", start)
        if nl < 0:
            line = self.data[start:]
            self.pos = len(self.data)
        else:
            line = self.data[start:nl]
            self.pos = nl + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        return start, line[:MAX_HEADER_LINE]


class _Warn:
    def __init__(self) -> None:
        self.items: list[str] = []

    def __call__(self, text: str) -> None:
        if len(self.items) < MAX_WARNINGS and text not in self.items:
            self.items.append(text)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").strip()


def _split_prop(line: bytes) -> tuple[str, dict[str, str], bytes]:
    """``NAME;P=V;BARE:value`` -> ("NAME", {"P": "V", "BARE": ""}, b"value")."""
    head, _, value = line.partition(b":")
    bits = head.decode("ascii", errors="replace").split(";")
    name = bits[0].strip().upper()
    if "." in name:  # grouped property (item1.TEL)
        name = name.rsplit(".", 1)[1]
    params: dict[str, str] = {}
    for b in bits[1:]:
        k, eq, v = b.partition("=")
        if eq:
            params[k.strip().upper()] = v.strip()
        else:
            params[k.strip().upper()] = ""
    return name, params, value


def _vcard_value(params: dict[str, str], value: bytes, warn: _Warn) -> str:
    if params.get("ENCODING", "").upper() in ("QUOTED-PRINTABLE", "QP") or "QUOTED-PRINTABLE" in params:
        value = quopri.decodestring(value)
    charset = params.get("CHARSET", "UTF-8") or "UTF-8"
    return _decode(value, charset, warn, what="vCard")[0].strip()


def _decode(raw: bytes, charset: str, warn: _Warn, *, what: str) -> tuple[str, str]:
    """Decode ``raw`` as ``charset``; returns (text, charset actually used)."""
    cs = charset.strip().upper()
    if cs in ("", "UTF-8", "UTF8"):
        text = raw.decode("utf-8", errors="replace")
        if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
            warn(f"{what}: invalid UTF-8 replaced")
        return text, "UTF-8"
    if cs == "NATIVE":
        # Native SMS content is the PDU in hex; obexd always asks phones for UTF-8 (reference
        # §2.7), so this only comes from unusual phones.  Show it as sent rather than guess.
        warn(f"{what}: NATIVE charset not decoded")
        return raw.decode("ascii", errors="replace"), "NATIVE"
    try:
        info = codecs.lookup(cs)
    except LookupError:
        info = None
    if info is None or not info._is_text_encoding:
        return _guess(raw, charset, warn, what)
    return raw.decode(info.name, errors="replace"), info.name


def _guess(raw: bytes, charset: str, warn: _Warn, what: str) -> tuple[str, str]:
    """An unknown charset: UTF-8 if the bytes are valid UTF-8, else Windows-1252 (what
    mislabelled Western text usually is); never fails."""
    try:
        text = raw.decode("utf-8")
        used = "UTF-8"
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
        used = "WINDOWS-1252"
    warn(f"{what}: unknown charset {charset[:40]!r}, read as {used}")
    return text, used


def _read_vcard(lines: _Lines, warn: _Warn) -> VCard:
    """After ``BEGIN:VCARD``; consumes through ``END:VCARD`` (or gives up at a limit)."""
    version = "2.1"
    n = fn = ""
    tels: list[str] = []
    emails: list[str] = []
    logical: list[bytes] = []
    count = 0
    while True:
        item = lines.next()
        if item is None:
            warn("vCard without END:VCARD")
            break
        pos, line = item
        if line[:1] in (b" ", b"\t") and logical:
            logical[-1] += line[1:]  # folded continuation
            continue
        if logical and logical[-1].endswith(b"=") and b"QUOTED-PRINTABLE" in logical[-1].upper():
            logical[-1] += b"\r\n" + line  # 2.1 QP soft break: next line continues the value
            continue
        up = line.strip().upper()
        if up == b"END:VCARD":
            break
        if up.startswith(b"BEGIN:"):
            # A vCard that never ended; give the line back to the caller.
            warn("vCard without END:VCARD")
            lines.pos = pos
            break
        count += 1
        if count > MAX_VCARD_LINES:
            continue
        logical.append(line)
    for line in logical:
        if b":" not in line:
            continue
        name, params, value = _split_prop(line)
        if name == "VERSION":
            version = _text(value) or version
        elif name == "N":
            n = _vcard_value(params, value, warn)
        elif name == "FN":
            fn = _vcard_value(params, value, warn)
        elif name == "TEL":
            v = _vcard_value(params, value, warn)
            if v and len(tels) < 8:
                tels.append(v)
        elif name == "EMAIL":
            v = _vcard_value(params, value, warn)
            if v and len(emails) < 8:
                emails.append(v)
    return VCard(version, n, fn, tuple(tels), tuple(emails))


def _expect_end(lines: _Lines, want: bytes, warn: _Warn) -> None:
    """Consume blank lines and ``want``; anything else is left in place with a warning."""
    while True:
        save = lines.pos
        item = lines.next()
        if item is None:
            warn(f"missing {want.decode()}")
            return
        _pos, line = item
        s = line.strip().upper()
        if not s:
            continue
        if s == want:
            return
        warn(f"missing {want.decode()}")
        lines.pos = save
        return


@dataclass
class _Body:
    charset: str = "UTF-8"
    encoding: str = ""
    language: str = ""
    part_id: int | None = None
    parts: list[str] = field(default_factory=list)
    found: bool = False


def parse(data: bytes | str, *, truncated: bool = False) -> BMessage:
    """Parse one bMessage.  ``truncated=True`` says ``data`` is only the first part of a larger
    file (the caller capped what it read): the end markers are then not expected."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="replace")
    if len(data) > MAX_BYTES:
        raise BMessageError(f"bMessage of {len(data)} bytes is larger than {MAX_BYTES}")
    warn = _Warn()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = _Lines(data)
    while True:
        item = lines.next()
        if item is None:
            raise BMessageError("empty input: no BEGIN:BMSG")
        line = item[1].strip()
        if not line:
            continue
        if line.upper() != b"BEGIN:BMSG":
            raise BMessageError("not a bMessage: it does not start with BEGIN:BMSG")
        break

    props: dict[str, str] = {}
    originators: list[VCard] = []
    envelopes: list[list[VCard]] = []
    body = _Body()
    while True:
        item = lines.next()
        if item is None:
            if not truncated:
                warn("missing END:BMSG")
            break
        _pos, raw = item
        line = raw.strip()
        up = line.upper()
        if not line:
            continue
        if up == b"END:BMSG":
            break
        if up == b"BEGIN:VCARD":
            card = _read_vcard(lines, warn)
            if len(originators) < MAX_VCARDS:
                originators.append(card)
            else:
                warn("too many originator vCards; extra ones skipped")
            continue
        if up == b"BEGIN:BENV":
            _read_envelope(lines, envelopes, body, warn, truncated, depth=1)
            continue
        if b":" in line:
            name, _params, value = _split_prop(line)
            if name in ("VERSION", "STATUS", "TYPE", "FOLDER") and name not in props:
                props[name] = _text(value)
            continue
        warn("unexpected line in bMessage header")

    version = props.get("VERSION", "")
    if not version:
        warn("missing VERSION")
        version = "1.0"
    status = props.get("STATUS", "").upper()
    if status not in STATUSES:
        if status:
            warn("unknown STATUS")
        status = "UNREAD"
    mtype = props.get("TYPE", "").upper()
    if mtype not in TYPES:
        warn(f"unknown TYPE {mtype[:20]!r}" if mtype else "missing TYPE")
        mtype = mtype[:20] or "SMS_GSM"
    if not body.found and not truncated:
        warn("no BBODY")
    return BMessage(
        version=version,
        status=status,
        type=mtype,
        folder=props.get("FOLDER", ""),
        originators=tuple(originators),
        envelopes=tuple(tuple(level) for level in envelopes) or ((),),
        charset=body.charset,
        encoding=body.encoding,
        language=body.language,
        part_id=body.part_id,
        parts=tuple(body.parts),
        warnings=tuple(warn.items),
        truncated=truncated,
    )


def _read_envelope(lines: _Lines, envelopes: list[list[VCard]], body: _Body, warn: _Warn, truncated: bool,
                   depth: int) -> None:
    """After ``BEGIN:BENV``: recipients, then a nested BENV or the BBODY, then ``END:BENV``."""
    if depth > MAX_ENVELOPE_DEPTH:
        raise BMessageError(f"envelopes nested deeper than {MAX_ENVELOPE_DEPTH}")
    level: list[VCard] = []
    envelopes.append(level)
    while True:
        item = lines.next()
        if item is None:
            if not truncated:
                warn("missing END:BENV")
            return
        pos, raw = item
        up = raw.strip().upper()
        if not up:
            continue
        if up == b"END:BENV":
            return
        if up == b"BEGIN:VCARD":
            card = _read_vcard(lines, warn)
            if len(level) < MAX_VCARDS:
                level.append(card)
            else:
                warn("too many recipient vCards; extra ones skipped")
            continue
        if up == b"BEGIN:BENV":
            _read_envelope(lines, envelopes, body, warn, truncated, depth + 1)
            continue
        if up == b"BEGIN:BBODY":
            if body.found:
                warn("second BBODY ignored")
                _skip_to(lines, b"END:BBODY")
                continue
            _read_body(lines, body, warn, truncated)
            continue
        if up in (b"END:BMSG",):
            warn("missing END:BENV")
            lines.pos = pos
            return
        warn("unexpected line in envelope")


def _skip_to(lines: _Lines, marker: bytes) -> None:
    while True:
        item = lines.next()
        if item is None or item[1].strip().upper() == marker:
            return


def _read_body(lines: _Lines, body: _Body, warn: _Warn, truncated: bool) -> None:
    """After ``BEGIN:BBODY``: the body properties, then the MSG blocks, then ``END:BBODY``."""
    body.found = True
    length: int | None = None
    msg_start: int | None = None
    while True:
        item = lines.next()
        if item is None:
            if not truncated:
                warn("BBODY without BEGIN:MSG")
            return
        pos, raw = item
        line = raw.strip()
        up = line.upper()
        if not line:
            continue
        if up == b"BEGIN:MSG":
            msg_start = pos
            break
        if up == b"END:BBODY":
            warn("BBODY without BEGIN:MSG")
            return
        if b":" not in line:
            warn("unexpected line in BBODY")
            continue
        name, _params, value = _split_prop(line)
        v = _text(value)
        if name == "CHARSET":
            body.charset = v.upper() or "UTF-8"
        elif name == "ENCODING":
            body.encoding = v[:40]
        elif name == "LANGUAGE":
            body.language = v[:40]
        elif name == "PARTID":
            try:
                body.part_id = int(v)
            except ValueError:
                warn("PARTID is not a number")
        elif name == "LENGTH":
            try:
                length = int(v)
                if length < 0:
                    raise ValueError(v)
            except ValueError:
                warn("LENGTH is not a number")
                length = None

    data = lines.data
    raw_parts, end_pos = _parts_by_length(data, msg_start, length)
    if raw_parts is None:
        raw_parts, end_pos, closed = _parts_by_markers(data, msg_start, truncated)
        if truncated:
            pass  # a cut file cannot match its LENGTH; the caller knows it is truncated
        elif length is None:
            warn("no LENGTH; used the END:MSG markers")
        else:
            warn(f"LENGTH {length} does not match the content; used the END:MSG markers")
        if not closed and not truncated:
            warn("missing END:MSG")
    if len(raw_parts) > MAX_PARTS:
        warn(f"more than {MAX_PARTS} MSG parts; extra ones dropped")
        raw_parts = raw_parts[:MAX_PARTS]
    charset_used = body.charset
    for rp in raw_parts:
        text, charset_used = _decode(rp, body.charset, warn, what="body")
        body.parts.append(text)
    body.charset = charset_used
    lines.pos = end_pos
    if end_pos < len(data) or not truncated:
        _expect_end(lines, b"END:BBODY", warn)


def _parts_by_length(data: bytes, start: int, length: int | None) -> tuple[list[bytes] | None, int]:
    """Trust LENGTH only if it ends exactly on ``<CRLF>END:MSG<CRLF>`` followed by END:BBODY."""
    if length is None or length < MSG_OVERHEAD:
        return None, start
    end = start + length
    if end > len(data):
        return None, start
    region = data[start:end]
    if not (region.startswith(MSG_BEGIN) and region.endswith(MSG_END)):
        return None, start
    tail = data[end:end + 64].lstrip(b"\r\n \t")
    if not tail.upper().startswith(b"END:BBODY"):
        return None, start
    inner = region[len(MSG_BEGIN):-len(MSG_END)]
    return inner.split(MSG_END + MSG_BEGIN), end


def _parts_by_markers(data: bytes, start: int, truncated: bool) -> tuple[list[bytes], int, bool]:
    """Without a usable LENGTH: the MSG list runs from ``BEGIN:MSG`` to the first ``END:BBODY``
    line; its last ``END:MSG`` line closes it, and ``END:MSG``/``BEGIN:MSG`` line pairs in between
    separate parts (content that merely contains an ``END:MSG`` line stays content).

    Returns (raw parts, position of the END:BBODY line or the end, whether it was closed)."""
    m = _END_BBODY_RE.search(data, start)
    stop = m.start() if m else len(data)
    region = data[start:stop]
    first = _BEGIN_MSG_RE.match(region)
    inner = region[first.end():] if first else region
    closed = False
    ends = list(_END_MSG_RE.finditer(inner))
    last = ends[-1] if ends else None
    if last is not None and not inner[last.end():].strip():
        inner = inner[:last.start()]
        closed = True
    parts = _SPLIT_MSG_RE.split(inner, maxsplit=MAX_PARTS)
    return parts, stop, closed and m is not None


_END_BBODY_RE = re.compile(rb"(?im)^END:BBODY[ \t]*\r?$")
_BEGIN_MSG_RE = re.compile(rb"(?i)BEGIN:MSG[ \t]*(?:\r?\n|\Z)")
_END_MSG_RE = re.compile(rb"(?im)(?:\r?\n|\A)END:MSG[ \t]*(?:\r?\n|\Z)")
_SPLIT_MSG_RE = re.compile(rb"(?i)\r?\nEND:MSG[ \t]*\r?\n(?:[ \t]*\r?\n)*BEGIN:MSG[ \t]*\r?\n")


# ---------------------------------------------------------------------------------------------
# Serializing
# ---------------------------------------------------------------------------------------------


def _clean(value: str) -> str:
    """A header/vCard value: one line, no control characters."""
    return "".join(ch for ch in value if ch >= " " and ch != "\x7f")


def _vcard_lines(card: VCard) -> list[str]:
    version = card.version if card.version in ("2.1", "3.0") else "2.1"
    out = ["BEGIN:VCARD", f"VERSION:{version}"]

    def prop(name: str, value: str) -> str:
        value = _clean(value)
        if version == "2.1" and not value.isascii():
            return f"{name};CHARSET=UTF-8:{value}"
        return f"{name}:{value}"

    out.append(prop("N", card.name))
    if card.formatted_name or version == "3.0":
        out.append(prop("FN", card.formatted_name))
    out.extend(prop("TEL", t) for t in card.tels)
    out.extend(prop("EMAIL", e) for e in card.emails)
    out.append("END:VCARD")
    return out


def body_length(parts: Sequence[bytes]) -> int:
    """LENGTH as MAP counts it: every ``BEGIN:MSG<CRLF>`` + content + ``<CRLF>END:MSG<CRLF>``."""
    return sum(len(p) + MSG_OVERHEAD for p in parts)


def serialize(msg: BMessage) -> bytes:
    """A bMessage for PushMessage (or a simulator's Get): CRLF lines, UTF-8 body, exact LENGTH."""
    if msg.type not in TYPES:
        raise BMessageError(f"unknown bMessage TYPE {msg.type!r}")
    if msg.status not in STATUSES:
        raise BMessageError(f"unknown bMessage STATUS {msg.status!r}")
    if not msg.parts:
        raise BMessageError("a bMessage needs at least one MSG part")
    if len(msg.envelopes) > MAX_ENVELOPE_DEPTH:
        raise BMessageError("too many envelope levels")
    head: list[str] = [
        "BEGIN:BMSG",
        f"VERSION:{_clean(msg.version) or '1.0'}",
        f"STATUS:{msg.status}",
        f"TYPE:{msg.type}",
        f"FOLDER:{_clean(msg.folder)}",
    ]
    for card in msg.originators:
        head.extend(_vcard_lines(card))
    levels = msg.envelopes or ((),)
    for level in levels:
        head.append("BEGIN:BENV")
        for card in level:
            head.extend(_vcard_lines(card))
    head.append("BEGIN:BBODY")
    if msg.part_id is not None:
        head.append(f"PARTID:{int(msg.part_id)}")
    if msg.encoding:
        head.append(f"ENCODING:{_clean(msg.encoding)}")
    charset = msg.charset.upper() if msg.charset else "UTF-8"
    if charset != "UTF-8":
        raise BMessageError("only UTF-8 bodies are written (obexd pushes with Charset utf8)")
    head.append("CHARSET:UTF-8")
    if msg.language:
        head.append(f"LANGUAGE:{_clean(msg.language)}")
    raw_parts = [p.encode("utf-8") for p in msg.parts]
    head.append(f"LENGTH:{body_length(raw_parts)}")
    out = bytearray(("\r\n".join(head) + "\r\n").encode("utf-8"))
    for p in raw_parts:
        out += MSG_BEGIN + p + MSG_END
    tail = ["END:BBODY"] + ["END:BENV"] * len(levels) + ["END:BMSG"]
    out += ("\r\n".join(tail) + "\r\n").encode("ascii")
    return bytes(out)


def new_message(text: str, *, recipient: str, msg_type: str = "SMS_GSM", recipient_name: str = "",
                folder: str = "TELECOM/MSG/OUTBOX", sender: VCard | None = None) -> BMessage:
    """An outgoing message to ``recipient`` (a number for SMS, an address for e-mail)."""
    is_email = msg_type == "EMAIL"
    card = VCard(version="2.1", name=recipient_name, formatted_name=recipient_name,
                 tels=() if is_email else (recipient,), emails=(recipient,) if is_email else ())
    return BMessage(status="READ", type=msg_type, folder=folder,
                    originators=(sender,) if sender else (), envelopes=((card,),), parts=(text,))
