"""A virtual phone's PBAP data: contacts, favourites and call history (ich/och/mch/cch), served as
vCard 2.1 or 3.0 the way real phones write them (reference §3.1).

Data comes from a ``.vcf`` file (served as the phone stored it, whatever format is asked, like an
old phone that ignores the Format parameter) or is generated deterministically from a seed.
Rendering styles imitate phone families:

* ``android`` — 3.0 ``TEL;TYPE=CELL``; 2.1 quoted-printable UTF-8 with soft breaks (the break may
  split a multi-byte character), base64 photos indented, ending with a blank line.
* ``iphone`` — grouped ``item1.TEL`` + ``item1.X-ABLabel``, ``TYPE=pref``, 3.0 folded at 75 octets.
* ``feature`` — 2.1 only in spirit: bare ``TEL;CELL;VOICE``, ``CHARSET=ISO-8859-1`` values, no FN,
  base64 photo lines unindented.

Counters (PBAP 1.2 folder version): ``primary``/``secondary`` move when the book changes
(:meth:`PhoneBook.change`), ``database_id`` when the phone resets its database.

May import pure models only (nothing from the daemon).
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Style = Literal["android", "iphone", "feature"]
Version = Literal["2.1", "3.0"]

FIRST = ["Olivia", "Noah", "Amelia", "Jack", "Isla", "Oliver", "Ava", "Harry", "Mia", "George", "José",
         "Zoë", "Łukasz", "Chloé", "Søren", "Ngozi", "Aoife", "Björn", "Émile", "Priya", "Mohammed", "Yuki",
         "Siobhán", "Dário", "Ana", "Ines", "Wei", "François", "Małgorzata", "Ólafur", "Kwame", "Lucía"]
LAST = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Müller", "García",
        "O'Brien", "Nowak", "Sørensen", "Okafor", "Dubois", "Kowalczyk", "Rossi", "Fernández", "Nakamura",
        "Murphy", "Ní Bhriain", "Pérez", "Chen", "Khan", "Jónsdóttir", "Mensah", "Łęcki", "Yılmaz"]
CJK = ["山田 太郎", "佐藤 花子", "李 伟", "김 민준"]
ORGS = ["Acme Ltd", "Garage & Sons", "City Hospital", "Example Corp", "Café Olé", ""]
OWNER_NAME = "Me"

# obexd prints byte 3 twice and never byte 4 (obexd/client/pbap.c u128_to_string); compare for
# equality only, as the daemon must.


def mangled_hex(value: bytes) -> str:
    d = value.ljust(16, b"\0")[:16]
    return "".join(f"{b:02X}" for b in (d[0], d[1], d[2], d[3], d[3], *d[5:16]))


@dataclass
class SimContact:
    family: str = ""
    given: str = ""
    fn: str = ""
    numbers: list[tuple[str, str]] = field(default_factory=list)  # (number, type: cell|home|work|...)
    emails: list[str] = field(default_factory=list)
    address: tuple[str, str, str, str] | None = None  # street, town, postcode, country
    org: str = ""
    photo: bytes | None = None
    uid: str = ""
    raw: bytes | None = None  # served verbatim (from a .vcf file)

    @property
    def display(self) -> str:
        return self.fn or " ".join(p for p in (self.given, self.family) if p)


@dataclass
class SimCall:
    kind: Literal["missed", "received", "dialed"]
    number: str
    when: str  # YYYYMMDDTHHMMSS
    contact: SimContact | None = None


@dataclass
class PhoneBook:
    owner: SimContact
    contacts: list[SimContact]
    favourites: list[int]  # indexes into contacts
    calls: list[SimCall]  # newest first
    primary: int = 1
    secondary: int = 1
    database_id: bytes = b"\x01" * 16
    style: Style = "android"

    # -- counters (PBAP 1.2) ------------------------------------------------------------------------
    @property
    def primary_counter(self) -> str:
        return mangled_hex(self.primary.to_bytes(16, "big"))

    @property
    def secondary_counter(self) -> str:
        return mangled_hex(self.secondary.to_bytes(16, "big"))

    @property
    def database_identifier(self) -> str:
        return mangled_hex(self.database_id)

    def change(self, *, added: int = 0, removed: int = 0, renamed: int = 0, seed: int = 0) -> None:
        """The user edits the phonebook: contacts added/removed/renamed; counters move."""
        rng = random.Random(seed or (self.primary * 7919 + len(self.contacts)))
        for _ in range(max(0, removed)):
            if self.contacts:
                self.contacts.pop(rng.randrange(len(self.contacts)))
        start = len(self.contacts)
        for i in range(max(0, added)):
            self.contacts.append(_gen_contact(rng, 100_000 + start + i + self.primary * 1000, photo_bytes=0))
        for _ in range(max(0, renamed)):
            if self.contacts:
                c = self.contacts[rng.randrange(len(self.contacts))]
                c.fn = f"{c.given} {c.family} (renamed {self.primary})".strip()
                c.raw = None
        self.favourites = [i for i in self.favourites if i < len(self.contacts)]
        self.primary += 1
        if added or removed or renamed:
            self.secondary += 1

    # -- folders ------------------------------------------------------------------------------------
    def entries(self, folder: str) -> list[tuple[SimContact | None, SimCall | None]]:
        """Entries of a folder in handle order (pb: handle 0 is the owner card)."""
        out: list[tuple[SimContact | None, SimCall | None]] = []
        if folder == "pb":
            out.append((self.owner, None))
            out.extend((c, None) for c in self.contacts)
            return out
        if folder == "fav":
            out.extend((self.contacts[i], None) for i in self.favourites)
            return out
        kinds = {"ich": ("received",), "och": ("dialed",), "mch": ("missed",),
                 "cch": ("received", "dialed", "missed")}.get(folder)
        if kinds is None:
            return []
        return [(c.contact, c) for c in self.calls if c.kind in kinds]

    def render(self, folder: str, version: Version, *, offset: int = 0, max_count: int = 65535,
               fields: int | None = None, photos: bool = True) -> bytes:
        entries = self.entries(folder)[offset:offset + max_count] if max_count else []
        want_photo = photos and (fields is None or bool(fields & (1 << 3)))
        want_call = fields is None or bool(fields & (1 << 28))
        out = []
        for contact, call in entries:
            out.append(render_card(contact, call, version, self.style, photo=want_photo,
                                   call_datetime=want_call))
        return b"".join(out)

    def listing(self, folder: str, *, offset: int = 0, max_count: int = 65535) -> list[tuple[str, str]]:
        rows = []
        for i, (contact, call) in enumerate(self.entries(folder)):
            name = ""
            if contact is not None:
                name = f"{contact.family};{contact.given}" if (contact.family or contact.given) else contact.display
            elif call is not None:
                name = call.number
            rows.append((f"{i}.vcf", name))
        return rows[offset:offset + max_count]


# -------------------------------------------------------------------------------------------------
# Generation
# -------------------------------------------------------------------------------------------------


def _number(rng: random.Random, i: int) -> tuple[str, str]:
    kind = rng.random()
    if kind < 0.70:  # UK mobile, in one of the ways phones store it
        digits = f"7{(100000000 + i * 7919) % 1_000_000_000:09d}"
        fmt = rng.random()
        if fmt < 0.4:
            return f"+44 {digits[:4]} {digits[4:]}", "cell"
        if fmt < 0.7:
            return f"0{digits[:4]} {digits[4:]}", "cell"
        return f"+44{digits}", "cell"
    if kind < 0.85:
        return f"020 7946 {i % 10000:04d}", rng.choice(["home", "work"])
    if kind < 0.95:
        return f"+33 6 {i % 100:02d} {(i // 100) % 100:02d} {(i * 7) % 100:02d} {(i * 13) % 100:02d}", "cell"
    return f"+1 (555) 01{i % 100:02d}-{i % 10000:04d}", "work"


def _gen_contact(rng: random.Random, i: int, *, photo_bytes: int) -> SimContact:
    if rng.random() < 0.02:
        fn = rng.choice(CJK)
        family, given = fn.split(" ", 1)
    else:
        given, family = rng.choice(FIRST), rng.choice(LAST)
        fn = f"{given} {family}"
    numbers = [_number(rng, i * 3)]
    if rng.random() < 0.35:
        numbers.append(_number(rng, i * 3 + 1))
    if rng.random() < 0.05:
        numbers.append(_number(rng, i * 3 + 2))
    emails = [f"{_ascii(given)}.{_ascii(family)}{i}@example.com".lower()] if rng.random() < 0.4 else []
    address = None
    if rng.random() < 0.15:
        address = (f"{1 + i % 200} High St; Flat {i % 9}", "London", f"N{i % 20} {i % 9}AA", "United Kingdom")
    photo = None
    if photo_bytes > 0:
        body = rng.randbytes(max(0, photo_bytes - 6))
        photo = b"\xff\xd8\xff" + body + b"\xff\xd9\x00"[:3]
    return SimContact(family=family, given=given, fn=fn, numbers=numbers, emails=emails, address=address,
                      org=rng.choice(ORGS) if rng.random() < 0.2 else "", photo=photo, uid=f"sim-{i}")


def _ascii(text: str) -> str:
    return "".join(ch for ch in text if ch.isascii() and ch.isalnum()) or "x"


def generate(count: int, *, seed: int = 1, photo_every: int = 0, photo_bytes: int = 4096, history: int = 20,
             favourites: int = 5, style: Style = "android", owner_number: str = "+44 7700 900000") -> PhoneBook:
    """``count`` contacts (+ the owner card), every ``photo_every``-th with a photo of
    ``photo_bytes``, ``history`` calls of each kind; same arguments, same book."""
    rng = random.Random(seed)
    contacts = [_gen_contact(rng, i + 1, photo_bytes=photo_bytes if photo_every and i % photo_every == 0 else 0)
                for i in range(count)]
    calls: list[SimCall] = []
    kinds: tuple[Literal["missed", "received", "dialed"], ...] = ("received", "dialed", "missed")
    for j in range(history * 3):
        kind = kinds[j % 3]
        day = 28 - (j // 24) % 28
        hour = 23 - j % 24
        when = f"202611{day:02d}T{hour:02d}{(j * 7) % 60:02d}{(j * 13) % 60:02d}"
        if contacts and rng.random() < 0.8:
            c = contacts[rng.randrange(len(contacts))]
            calls.append(SimCall(kind, c.numbers[0][0], when, c))
        else:
            calls.append(SimCall(kind, f"+44 7700 9{j % 100000:05d}"[:16], when, None))
    owner = SimContact(family="", given="", fn=OWNER_NAME, numbers=[(owner_number, "cell")], uid="owner")
    favs = list(range(0, min(len(contacts), favourites * 3), 3))[:favourites]
    return PhoneBook(owner, contacts, favs, calls, style=style,
                     database_id=rng.randbytes(16))


def from_vcf(path: str | Path, *, style: Style = "android", history: int = 10, seed: int = 1) -> PhoneBook:
    """A phone whose stored contacts are the cards of a ``.vcf`` file (served verbatim)."""
    data = Path(path).read_bytes()
    contacts = [SimContact(fn=_peek_name(raw), numbers=_peek_numbers(raw), raw=raw) for raw in split_cards(data)]
    book = generate(0, seed=seed, history=0, style=style)
    book.contacts = contacts
    rng = random.Random(seed)
    kinds: tuple[Literal["missed", "received", "dialed"], ...] = ("received", "dialed", "missed")
    for j in range(history * 3):
        c = contacts[rng.randrange(len(contacts))] if contacts else None
        number = c.numbers[0][0] if c and c.numbers else f"+44 7700 9000{j:02d}"
        book.calls.append(SimCall(kinds[j % 3], number, f"20261101T{(23 - j % 24):02d}0000", c))
    return book


_CALL_KINDS: dict[str, Literal["missed", "received", "dialed"]] = {
    "RECEIVED": "received", "DIALED": "dialed", "DIALLED": "dialed", "MISSED": "missed"}
_HISTORY_FILES: tuple[tuple[str, Literal["missed", "received", "dialed"] | None], ...] = (
    ("ich", "received"), ("och", "dialed"), ("mch", "missed"))


def load_call_history(path: str | Path) -> list[SimCall]:
    """A phone's call history from files, newest first: a ``.vcf`` of call-history cards (each
    with ``X-IRMC-CALL-DATETIME;RECEIVED|DIALED|MISSED:20261101T093000``, as PBAP phones send
    ich/och/mch/cch), or a directory with ``ich.vcf``/``och.vcf``/``mch.vcf`` (a card without the
    kind takes its file's) or, without those, ``cch.vcf``.  ValueError names the file and card."""
    p = Path(path)
    files: list[tuple[Path, Literal["missed", "received", "dialed"] | None]]
    if p.is_dir():
        files = [(p / f"{n}.vcf", k) for n, k in _HISTORY_FILES if (p / f"{n}.vcf").is_file()]
        if not files and (p / "cch.vcf").is_file():
            files = [(p / "cch.vcf", None)]
        if not files:
            raise ValueError(f"{p}: no ich.vcf, och.vcf, mch.vcf or cch.vcf in this directory")
    else:
        files = [(p, None)]
    calls: list[SimCall] = []
    for f, default in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise ValueError(f"{f}: cannot read ({exc.strerror})") from None
        for i, raw in enumerate(split_cards(data)):
            calls.append(_history_card(raw, default, f"{f}: card {i + 1}"))
    calls.sort(key=lambda c: c.when, reverse=True)  # stable: the files' order among equal times
    return calls


def _history_card(raw: bytes, default: Literal["missed", "received", "dialed"] | None, where: str) -> SimCall:
    kind = default
    when = ""
    kept = []
    for line in raw.splitlines(keepends=True):
        head, sep, value = line.partition(b":")
        name, *params = head.strip().split(b";")
        if sep and name.rsplit(b".", 1)[-1].upper() == b"X-IRMC-CALL-DATETIME":
            when = value.strip().decode("ascii", "replace")
            for prm in params:
                word = prm.split(b"=", 1)[-1].decode("ascii", "replace").upper()
                if word in _CALL_KINDS:
                    kind = _CALL_KINDS[word]
            continue
        kept.append(line)
    if kind is None:
        raise ValueError(f"{where}: X-IRMC-CALL-DATETIME does not say RECEIVED, DIALED or MISSED")
    card = b"".join(kept)
    numbers = _peek_numbers(card)
    shown = _peek_name(card)
    contact = SimContact(fn=shown, numbers=numbers, raw=card) if (shown or numbers) else None
    return SimCall(kind, numbers[0][0] if numbers else "", when, contact)


def split_cards(data: bytes) -> list[bytes]:
    """Raw ``BEGIN:VCARD`` .. ``END:VCARD`` blocks with the file's own line endings (a phone that
    writes LF-only serves LF-only), garbage between kept out; an unterminated card is kept as it
    is (a phone serving a broken entry).  Finds the markers with ``bytes.find`` on an upper-cased
    copy, so a card with a 50 MB photo costs no per-line work."""
    up = data.upper()
    marks: list[tuple[int, int, bool]] = []  # (line start, end after its newline, is BEGIN)
    for word, begin in ((b"BEGIN:VCARD", True), (b"END:VCARD", False)):
        i = up.find(word)
        while i >= 0:
            ls = up.rfind(b"\n", 0, i) + 1
            le = up.find(b"\n", i)
            le = len(up) if le < 0 else le + 1
            if up[ls:le].strip() == word:
                marks.append((ls, le, begin))
            i = up.find(word, i + len(word))
    marks.sort()
    cards: list[bytes] = []
    start: int | None = None
    for ls, le, begin in marks:
        if begin:
            if start is not None:  # a card the phone never finished: served as it is (broken)
                cards.append(data[start:ls])
            start = ls
        elif start is not None:
            card = data[start:le]
            cards.append(card if card.endswith(b"\n") else card + b"\r\n")
            start = None
    if start is not None:
        cards.append(data[start:] if data.endswith(b"\n") else data[start:] + b"\r\n")
    return cards


def _short_lines(raw: bytes) -> list[bytes]:
    """The card's lines that can hold a name or number (not photo data), from its first 64 KiB."""
    return [ln.rstrip(b"\r") for ln in raw[:65536].split(b"\n") if len(ln) < 1000]


def _peek_name(raw: bytes) -> str:
    for line in _short_lines(raw):
        if line.upper().startswith(b"FN") and b":" in line:
            return line.split(b":", 1)[1].decode("utf-8", "replace")
    return ""


def _peek_numbers(raw: bytes) -> list[tuple[str, str]]:
    out = []
    for line in _short_lines(raw):
        head = line.split(b":", 1)[0].upper()
        if (head.startswith(b"TEL") or b".TEL" in head) and b":" in line:
            out.append((line.split(b":", 1)[1].decode("utf-8", "replace"), "cell"))
    return out


# -------------------------------------------------------------------------------------------------
# Rendering
# -------------------------------------------------------------------------------------------------


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _esc21(text: str) -> str:
    """2.1 escaping as Android's builder does it: backslash and semicolon."""
    return text.replace("\\", "\\\\").replace(";", "\\;")


def _fold(line: bytes, width: int = 75) -> bytes:
    """Fold at ``width`` octets (may split a UTF-8 sequence, as octet-folding phones do)."""
    if len(line) <= width:
        return line + b"\r\n"
    parts = [line[:width]]
    rest = line[width:]
    while rest:
        parts.append(b" " + rest[:width - 1])
        rest = rest[width - 1:]
    return b"\r\n".join(parts) + b"\r\n"


def _qp(name: str, value: str) -> bytes:
    """2.1 quoted-printable UTF-8 property with soft breaks every 76 characters (a soft break can
    land inside a multi-byte character: exactly what phones do)."""
    encoded = "".join(f"={b:02X}" if (b < 33 or b > 126 or b in (61, 59)) and b != 32 else chr(b)
                      for b in value.encode("utf-8"))
    head = f"{name};CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:"
    line = head + encoded
    out, cur = [], line
    while len(cur) > 75:
        cut = 74
        # never split an =XX escape itself (the soft break may still split a UTF-8 sequence)
        if cur[cut - 1] == "=":
            cut -= 1
        elif cur[cut - 2] == "=":
            cut -= 2
        out.append(cur[:cut] + "=")
        cur = cur[cut:]
    out.append(cur)
    return ("\r\n".join(out) + "\r\n").encode("ascii")


def _qp_struct(name: str, parts: list[str]) -> bytes:
    """QP for a structured value: ``;`` separators stay literal."""
    enc = ";".join("".join(f"={b:02X}" if (b < 33 or b > 126 or b in (61, 59)) and b != 32 else chr(b)
                           for b in _esc21(p).encode("utf-8")) for p in parts)
    line = f"{name};CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:{enc}"
    out, cur = [], line
    while len(cur) > 75:
        cut = 74
        if cur[cut - 1] == "=":
            cut -= 1
        elif cur[cut - 2] == "=":
            cut -= 2
        out.append(cur[:cut] + "=")
        cur = cur[cut:]
    out.append(cur)
    return ("\r\n".join(out) + "\r\n").encode("ascii")


def _b64_lines(data: bytes, indent: bool) -> bytes:
    b64 = base64.b64encode(data)
    pre = b" " if indent else b""
    lines = [pre + b64[i:i + 72] for i in range(0, len(b64), 72)]
    return b"\r\n".join(lines) + b"\r\n"


def render_card(contact: SimContact | None, call: SimCall | None, version: Version, style: Style, *,
                photo: bool = True, call_datetime: bool = True) -> bytes:
    if contact is not None and contact.raw is not None:
        raw = contact.raw
        if call is not None and call_datetime:
            kind = call.kind.upper()
            raw = raw.replace(b"END:VCARD", f"X-IRMC-CALL-DATETIME;{kind}:{call.when}\r\nEND:VCARD".encode(), 1)
        return raw
    c = contact or SimContact(numbers=[(call.number, "cell")] if call else [])
    out = bytearray(b"BEGIN:VCARD\r\n")
    out += f"VERSION:{version}\r\n".encode()
    if version == "2.1":
        _render21(out, c, style)
    else:
        _render30(out, c, style)
    if photo and c.photo:
        if version == "2.1":
            out += b"PHOTO;ENCODING=BASE64;TYPE=JPEG:\r\n"
            out += _b64_lines(c.photo, indent=style != "feature")
            out += b"\r\n"
        else:
            out += _fold(b"PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(c.photo))
    if call is not None and call_datetime:
        kind = call.kind.upper()
        if version == "3.0" and style == "iphone":
            out += f"X-IRMC-CALL-DATETIME;TYPE={kind}:{call.when}\r\n".encode()
        else:
            out += f"X-IRMC-CALL-DATETIME;{kind}:{call.when}\r\n".encode()
    out += b"END:VCARD\r\n"
    return bytes(out)


def _render21(out: bytearray, c: SimContact, style: Style) -> None:
    ascii_name = (c.family + c.given + c.fn).isascii()
    if style == "feature":
        # Latin-1 where it fits, raw, no FN (only N is mandatory in 2.1)
        try:
            (c.family + c.given).encode("latin-1")
            out += b"N;CHARSET=ISO-8859-1:" + f"{_esc21(c.family)};{_esc21(c.given)};;;".encode("latin-1") + b"\r\n"
        except UnicodeEncodeError:
            out += _qp_struct("N", [c.family, c.given, "", "", ""])
    elif ascii_name:
        out += f"N:{_esc21(c.family)};{_esc21(c.given)};;;\r\n".encode()
        if c.fn:
            out += f"FN:{_esc21(c.fn)}\r\n".encode()
    else:
        out += _qp_struct("N", [c.family, c.given, "", "", ""])
        if c.fn:
            out += _qp("FN", _esc21(c.fn))
    for number, kind in c.numbers:
        t = {"cell": "CELL", "home": "HOME", "work": "WORK"}.get(kind, "VOICE")
        out += f"TEL;{t};VOICE:{number}\r\n".encode() if style == "feature" else f"TEL;{t}:{number}\r\n".encode()
    for e in c.emails:
        out += f"EMAIL;INTERNET:{e}\r\n".encode()
    if c.address:
        street, town, pc, country = c.address
        parts = ["", "", street, town, "", pc, country]
        if all(p.isascii() for p in parts):
            out += ("ADR;HOME:" + ";".join(_esc21(p) for p in parts) + "\r\n").encode()
        else:
            out += _qp_struct("ADR;HOME", parts)
    if c.org:
        out += f"ORG:{c.org}\r\n".encode() if c.org.isascii() else _qp("ORG", c.org)


def _render30(out: bytearray, c: SimContact, style: Style) -> None:
    out += _fold(f"N:{_esc(c.family)};{_esc(c.given)};;;".encode())
    out += _fold(f"FN:{_esc(c.display)}".encode())
    for i, (number, kind) in enumerate(c.numbers):
        t = {"cell": "CELL", "home": "HOME", "work": "WORK"}.get(kind, "VOICE")
        if style == "iphone":
            pref = ";TYPE=pref" if i == 0 else ""
            out += f"item{i + 1}.TEL;TYPE={t};TYPE=VOICE{pref}:{number}\r\n".encode()
            label = {"cell": "_$!<Mobile>!$_", "home": "_$!<Home>!$_"}.get(kind, "Office")
            out += f"item{i + 1}.X-ABLabel:{label}\r\n".encode()
        else:
            out += f"TEL;TYPE={t}:{number}\r\n".encode()
    for e in c.emails:
        out += f"EMAIL;TYPE=INTERNET:{e}\r\n".encode()
    if c.address:
        street, town, pc, country = c.address
        out += _fold(("ADR;TYPE=HOME:;;" + ";".join(_esc(p) for p in (street, town, "", pc, country))).encode())
    if c.org:
        out += _fold(f"ORG:{_esc(c.org)}".encode())
    if c.uid:
        out += f"UID:{c.uid}\r\n".encode()


def photo_for_test(size: int) -> bytes:
    """A deterministic fake JPEG of ``size`` bytes."""
    return b"\xff\xd8\xff" + bytes((i * 31) & 0xFF for i in range(max(0, size - 5))) + b"\xff\xd9"


__all__ = ["PhoneBook", "SimCall", "SimContact", "from_vcf", "generate", "mangled_hex",
           "photo_for_test", "render_card", "split_cards"]
