"""PBAP inside the fake obexd: ``org.bluez.obex.PhonebookAccess1`` on a ``pbap`` session, faithful to
reference §2.5, §3.1 and §7 item 12 (upstream ``obexd/client/pbap.c``).

* ``Select(location, phonebook)`` (async): ``int``/``internal`` -> ``/telecom``, ``sim``/``simN`` ->
  ``/SIMn/telecom``; ``pb ich och mch cch`` (+ ``spd fav`` internal only), case-insensitive; a bad
  combination is ``InvalidArguments "Invalid path"``.  Like upstream, the new path is remembered
  *before* the phone answers; an OBEX failure comes back as ``Failed`` carrying the OBEX reason
  (``"Forbidden"`` while the phone's "allow contacts?" prompt is open, ``"Not Found"`` for a folder
  the phone lacks: SIM, or fav on a phone without favourites).
* ``PullAll``/``Pull``/``List``/``Search``/``GetSize`` before any Select:
  ``Forbidden "Call Select first of all"``.  Filters: keys case-insensitive, unknown keys ignored
  (incl. the documented-but-unimplemented FilterAll/FilterAny/ResetNewMissedCalls), values strictly
  typed (``Format`` s vcard21|vcard30|"", ``Order`` s, ``Offset``/``MaxCount`` **q**, ``Fields`` as
  of ListFilterFields names, ``ALL`` or ``BITn``) — anything else ``InvalidArguments``.  No
  ``Format`` => vCard 2.1 (the PSE default).
* ``PullAll``/``Pull`` return ``(o, a{sv})`` at once (a queued Transfer1, see simulator/obex.py);
  ``List``/``Search`` return ``a(ss)``; ``GetSize`` ``q``.  PBAP 1.2 phones expose
  ``PrimaryCounter``/``SecondaryCounter``/``DatabaseIdentifier`` (32 hex digits, obexd's mangled
  print) and ``FixedImageSize``; like upstream, the counters are learnt from the phone only by
  ``GetSize``/``UpdateVersion`` (zeros before), ``UpdateVersion`` is ``NotSupported`` on 1.1.
* While permission is pending every pull's transfer ends in ``error`` (the phone answers the GET
  with Forbidden).

Quirks: ``phone.extra["pbap_ignores_paging"] = True`` makes the phone ignore Offset/MaxCount (it
sends the whole folder every time, as some old phones do).

Control (Python, and ``org.dashbridge.Sim.Obex1``): :func:`set_permission` (``PbapSetPermission``),
:func:`change_phonebook` (``PbapChangePhonebook``: add/remove/rename contacts, counters move),
:func:`book_for` (the phone's :class:`~simulator.vcards.PhoneBook`); the generic ``SetRate``,
``FailNextTransfer``, ``Restart`` of simulator/obex.py cover a slow phone, a transfer failing
part-way and an obexd restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dbus_fast import Variant

from .obex import (
    Call,
    FakeInterface,
    FakeObexd,
    ObexError,
    ObexProfile,
    Session,
    TransferSpec,
    register_control_method,
    register_profile,
)
from .phone import PBAP_PSE, VirtualPhone
from .vcards import PhoneBook, from_vcf, generate, load_call_history

PBAP_IFACE = "org.bluez.obex.PhonebookAccess1"
SETPATH_DELAY_S = 0.005

FILTER_LIST = ["VERSION", "FN", "N", "PHOTO", "BDAY", "ADR", "LABEL", "TEL", "EMAIL", "MAILER", "TZ", "GEO",
               "TITLE", "ROLE", "LOGO", "AGENT", "ORG", "NOTE", "REV", "SOUND", "URL", "UID", "KEY", "NICKNAME",
               "CATEGORIES", "PROID", "CLASS", "SORT-STRING", "X-IRMC-CALL-DATETIME", "X-BT-SPEEDDIALKEY",
               "X-BT-UCI", "X-BT-UID"]
FILTER_ALL = (1 << 64) - 1
_FOLDERS = ("pb", "ich", "och", "mch", "cch")
_INTERNAL_ONLY = ("spd", "fav")
_ZERO = "0" * 32


def book_for(phone: VirtualPhone) -> PhoneBook:
    """The phone's phonebook (built once from its fields and cached on the phone)."""
    book = phone.extra.get("pbap_book")
    if isinstance(book, PhoneBook):
        return book
    if phone.contacts_vcf:
        book = from_vcf(phone.contacts_vcf, style=phone.pbap_style, history=phone.pbap_history,
                        seed=phone.pbap_seed)
    else:
        book = generate(phone.generated_contacts, seed=phone.pbap_seed, photo_every=phone.pbap_photo_every,
                        photo_bytes=phone.pbap_photo_bytes, history=phone.pbap_history, style=phone.pbap_style,
                        favourites=5 if phone.pbap_favourites else 0)
    if phone.history_from:
        book.calls = load_call_history(phone.history_from)
    phone.extra["pbap_book"] = book
    return book


def _build_path(location: str, item: str) -> str | None:
    loc = location.lower()
    if loc in ("int", "internal"):
        path, internal = "/telecom", True
    elif loc.startswith("sim"):
        path, internal = "/" + ("SIM1" if len(loc) == 3 else location[:4].upper()) + "/telecom", False
    else:
        return None
    it = item.lower()
    if it in _FOLDERS or (internal and it in _INTERNAL_ONLY):
        return f"{path}/{it}"
    return None


def _field_mask(name: str) -> int:
    up = name.upper()
    if up == "ALL":
        return FILTER_ALL
    if up in FILTER_LIST:
        return 1 << FILTER_LIST.index(up)
    if 4 <= len(up) <= 5 and up.startswith("BIT") and up[3:].isdigit() and int(up[3:]) <= 63:
        return 1 << int(up[3:])
    return 0


class Filters:
    """Parsed like upstream ``parse_filters``: wrong type or value => InvalidArguments."""

    def __init__(self, raw: dict[str, Variant], *, default_max: int = 65535) -> None:
        self.version = "2.1"
        self.offset = 0
        self.max_count = default_max
        self.fields: int | None = None
        self.order = "indexed"
        for key, var in raw.items():
            k = key.lower()
            if k == "format":
                if var.signature != "s" or var.value.lower() not in ("", "vcard21", "vcard30"):
                    raise ObexError.invalid_args()
                self.version = "3.0" if var.value.lower() == "vcard30" else "2.1"
            elif k == "order":
                if var.signature != "s" or var.value.lower() not in ("", "indexed", "alphanumeric", "phonetic"):
                    raise ObexError.invalid_args()
                self.order = var.value.lower() or "indexed"
            elif k == "offset":
                if var.signature != "q":
                    raise ObexError.invalid_args()
                self.offset = int(var.value)
            elif k == "maxcount":
                if var.signature != "q":
                    raise ObexError.invalid_args()
                self.max_count = int(var.value)
            elif k == "fields":
                if var.signature != "as":
                    raise ObexError.invalid_args()
                mask = 0
                for name in var.value:
                    bit = _field_mask(name)
                    if not bit:
                        raise ObexError.invalid_args()
                    mask |= bit
                self.fields = mask
            # any other key (FilterAll, FilterAny, ResetNewMissedCalls, ...) is ignored upstream


class PhonebookAccess(FakeInterface):
    def __init__(self, session: Session) -> None:
        super().__init__(PBAP_IFACE)
        self.session = session
        self.phone = session.phone
        self.path: str | None = None
        self.primary = _ZERO
        self.secondary = _ZERO
        self.database_id = _ZERO
        self.method("Select", "ss", "", self._select)
        self.method("PullAll", "sa{sv}", "oa{sv}", self._pull_all)
        self.method("Pull", "ssa{sv}", "oa{sv}", self._pull)
        self.method("List", "a{sv}", "a(ss)", self._list)
        self.method("Search", "ssa{sv}", "a(ss)", self._search)
        self.method("GetSize", "", "q", self._get_size)
        self.method("ListFilterFields", "", "as", self._list_filter_fields)
        self.method("UpdateVersion", "", "", self._update_version)

    # -- properties -------------------------------------------------------------------------------
    @property
    def v12(self) -> bool:
        return self.phone.pbap_version >= "1.2"

    def properties(self) -> dict[str, Variant]:
        props: dict[str, Variant] = {}
        if self.path is not None:
            props["Folder"] = Variant("s", self.path)
        if self.v12:
            props["DatabaseIdentifier"] = Variant("s", self.database_id)
            props["PrimaryCounter"] = Variant("s", self.primary)
            props["SecondaryCounter"] = Variant("s", self.secondary)
            props["FixedImageSize"] = Variant("b", True)
        return props

    def property_signatures(self) -> dict[str, str]:
        return {"Folder": "s", "DatabaseIdentifier": "s", "PrimaryCounter": "s", "SecondaryCounter": "s",
                "FixedImageSize": "b"}

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def book(self) -> PhoneBook:
        return book_for(self.phone)

    def _folder(self) -> str:
        if self.path is None:
            raise ObexError.forbidden("Call Select first of all")
        return self.path.rsplit("/", 1)[-1]

    def _phone_has(self, path: str) -> bool:
        if not path.startswith("/telecom/"):
            return False  # the virtual phone has no SIM phonebook
        folder = path.rsplit("/", 1)[-1]
        if folder == "fav":
            return self.phone.pbap_favourites and self.v12
        return folder != "spd"

    def _permitted(self) -> bool:
        return self.phone.pbap_permission == "granted"

    def _rate(self) -> int | None:
        ctl = self.session.obexd.control.rate.get(self.phone.address)
        if ctl is not None:
            return ctl
        return self.phone.pbap_rate or None

    # -- methods ----------------------------------------------------------------------------------
    async def _select(self, call: Call, location: str, item: str) -> list[Any]:
        path = _build_path(location, item)
        if path is None:
            raise ObexError.invalid_args("Invalid path")
        if self.path == path:
            return []
        self.path = path  # upstream remembers it before the phone answers
        await asyncio.sleep(SETPATH_DELAY_S)
        if not self._permitted():
            raise ObexError.failed("Forbidden")
        if not self._phone_has(path):
            raise ObexError.failed("Not Found")
        self.changed("Folder")
        return []

    def _transfer(self, name: str, content: Any, targetfile: str, ok: bool) -> list[Any]:
        spec = TransferSpec(name=name, type="x-bt/phonebook", content=content, targetfile=targetfile,
                            rate=self._rate(), fail_after=None if ok else 0)
        path, props = self.session.queue_transfer(spec)
        return [path, props]

    def _pull_all(self, call: Call, targetfile: str, filters: dict[str, Variant]) -> list[Any]:
        folder = self._folder()
        f = Filters(filters)
        path = self.path or ""
        name = path.lstrip("/") + ".vcf"
        ok = self._permitted() and self._phone_has(path)
        book = self.book

        if self.phone.extra.get("pbap_ignores_paging"):  # some old phones send everything, always
            f.offset, f.max_count = 0, 65535

        def content() -> bytes:  # evaluated when the transfer starts (the phone's data then)
            return book.render(folder, f.version, offset=f.offset, max_count=f.max_count,  # type: ignore[arg-type]
                               fields=f.fields)

        return self._transfer(name, content, targetfile, ok)

    def _pull(self, call: Call, vcard: str, targetfile: str, filters: dict[str, Variant]) -> list[Any]:
        folder = self._folder()
        f = Filters(filters)
        ok = self._permitted() and self._phone_has(self.path or "")
        handle = vcard.removesuffix(".vcf")
        index = int(handle) if handle.isdigit() else -1
        book = self.book
        if index < 0 or index >= len(book.entries(folder)):
            ok = False  # the phone answers Not Found: the transfer fails

        def content() -> bytes:
            return book.render(folder, f.version, offset=max(0, index), max_count=1,  # type: ignore[arg-type]
                               fields=f.fields)

        return self._transfer(vcard, content, targetfile, ok)

    async def _listing(self, rows: list[tuple[str, str]]) -> list[Any]:
        await asyncio.sleep(SETPATH_DELAY_S)
        if not self._permitted():
            raise ObexError.failed("Forbidden")
        if not self._phone_has(self.path or ""):
            raise ObexError.failed("Not Found")
        return [[list(r) for r in rows]]

    def _list(self, call: Call, filters: dict[str, Variant]) -> Any:
        folder = self._folder()
        f = Filters(filters)
        return self._listing(self.book.listing(folder, offset=f.offset, max_count=f.max_count))

    def _search(self, call: Call, field: str, value: str, filters: dict[str, Variant]) -> Any:
        folder = self._folder()
        fl = field.lower()
        if fl not in ("", "name", "number", "sound"):
            raise ObexError.invalid_args()
        f = Filters(filters)
        needle = value.lower()
        rows = []
        for i, (contact, _call) in enumerate(self.book.entries(folder)):
            if contact is None:
                continue
            if fl == "number":
                hit = any(needle in n.lower() for n, _ in contact.numbers)
            else:
                hit = needle in contact.display.lower() or needle in f"{contact.family};{contact.given}".lower()
            if hit:
                rows.append((f"{i}.vcf", f"{contact.family};{contact.given}" if contact.family else contact.display))
        return self._listing(rows[f.offset:f.offset + f.max_count])

    async def _get_size(self, call: Call) -> list[Any]:
        folder = self._folder()
        await asyncio.sleep(SETPATH_DELAY_S)
        if not self._permitted():
            raise ObexError.failed("Forbidden")
        if not self._phone_has(self.path or ""):
            raise ObexError.failed("Not Found")
        self._read_version()
        return [len(self.book.entries(folder))]

    def _read_version(self) -> None:
        if not self.v12:
            return
        book = self.book
        changed = []
        for attr, value in (("primary", book.primary_counter), ("secondary", book.secondary_counter),
                            ("database_id", book.database_identifier)):
            if getattr(self, attr) != value:
                setattr(self, attr, value)
                changed.append({"primary": "PrimaryCounter", "secondary": "SecondaryCounter",
                                "database_id": "DatabaseIdentifier"}[attr])
        if changed:
            self.changed(*changed)

    def _list_filter_fields(self, call: Call) -> list[Any]:
        return [FILTER_LIST + [f"BIT{i}" for i in range(len(FILTER_LIST), 64)]]

    async def _update_version(self, call: Call) -> list[Any]:
        if not self.v12:
            raise ObexError.not_supported()
        await self._get_size(call)
        return []


register_profile(ObexProfile(names=("pbap",), uuid=PBAP_PSE, phone_profile="pbap", factory=PhonebookAccess,
                             default_channel=19))


# -- control ------------------------------------------------------------------------------------------


def _phone(obexd: FakeObexd, address: str) -> VirtualPhone:
    phone = obexd.phones.get(address.upper())
    if phone is None:
        raise ObexError.invalid_args(f"no such phone {address}")
    return phone


def set_permission(obexd: FakeObexd, address: str, state: str) -> None:
    """The user answers (or re-opens) the phone's "allow contacts?" prompt."""
    if state not in ("granted", "pending", "denied"):
        raise ObexError.invalid_args(f"permission must be granted, pending or denied, not {state!r}")
    _phone(obexd, address).pbap_permission = state  # type: ignore[assignment]


def change_phonebook(obexd: FakeObexd, address: str, *, added: int = 0, removed: int = 0,
                     renamed: int = 0) -> PhoneBook:
    """The user edits contacts on the phone: the book changes and its counters move."""
    book = book_for(_phone(obexd, address))
    book.change(added=added, removed=removed, renamed=renamed)
    return book


register_control_method("PbapSetPermission", "ss", "", lambda od, c, a, s: set_permission(od, a, s))
register_control_method("PbapChangePhonebook", "suuu", "",
                        lambda od, c, a, ad, rm, rn: change_phonebook(od, a, added=ad, removed=rm, renamed=rn)
                        and None)
