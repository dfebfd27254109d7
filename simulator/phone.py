"""A virtual phone: its identity, radio behaviour and data, shared by every fake.

Each fake (BlueZ, oFono, obexd) reads the fields it needs; the world/control interfaces change
them.  Keep fields plain data so a scenario file can describe a phone.
"""

from __future__ import annotations

import email.message
import email.utils
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Phone-side service UUIDs (reference §1.9)
HFP_AG = "0000111f-0000-1000-8000-00805f9b34fb"
HSP_AG = "00001112-0000-1000-8000-00805f9b34fb"
A2DP_SOURCE = "0000110a-0000-1000-8000-00805f9b34fb"
AVRCP_TARGET = "0000110c-0000-1000-8000-00805f9b34fb"
PBAP_PSE = "0000112f-0000-1000-8000-00805f9b34fb"
MAP_MAS = "00001132-0000-1000-8000-00805f9b34fb"
PNP = "00001200-0000-1000-8000-00805f9b34fb"

PROFILE_UUIDS = {"hfp": HFP_AG, "hsp": HSP_AG, "a2dp": A2DP_SOURCE, "avrcp": AVRCP_TARGET,
                 "pbap": PBAP_PSE, "map": MAP_MAS, "pnp": PNP}
DEFAULT_PROFILES = ("hfp", "a2dp", "avrcp", "pbap", "map", "pnp")

PairingMethod = Literal["numeric", "legacy_pin", "just_works"]


@dataclass
class PhoneMessage:
    """One message in the phone's MAP store (an SMS, MMS or e-mail)."""

    handle: int  # MAP handle (64-bit); obexd's object is <session>/message<decimal handle>
    folder: str = "inbox"  # inbox | outbox | sent | deleted | draft (under telecom/msg)
    type: str = "SMS_GSM"  # SMS_GSM | SMS_CDMA | MMS | EMAIL
    sender: str = ""  # number, or e-mail address
    sender_name: str = ""
    recipient: str = ""
    recipient_name: str = ""
    subject: str = ""
    body: str = ""  # SMS text; for EMAIL/MMS the whole RFC 5322 message
    timestamp: str = ""  # MAP datetime YYYYMMDDTHHMMSS (phone local time)
    read: bool = False
    sent: bool = False
    priority: bool = False
    protected: bool = False
    bmessage: bytes | None = None  # exact bytes to serve from Get (fault injection), else built


@dataclass
class VirtualPhone:
    address: str  # "AA:BB:CC:DD:EE:FF"
    name: str = "Phone"
    device_class: int = 0x5A020C  # smartphone
    profiles: tuple[str, ...] = DEFAULT_PROFILES
    pairing: PairingMethod = "numeric"
    pin: str = "0000"  # legacy phones
    in_range: bool = True
    accepts_pairing: bool = True  # the user taps "Pair" on the phone
    bonded: bool = False  # the phone's side of the bond (False after "forget car" on the phone)
    # BlueZ fake (simulator/bluez/)
    discoverable: bool = True  # shows up when the car scans (phone's Bluetooth settings open)
    auto_reconnect: bool = False  # phone reconnects by itself when it comes back in range
    passkey: int | None = None  # numeric-comparison passkey it shows; None: the fake picks one
    rssi: int = -55  # dBm reported while the car is discovering
    gatt: list[Any] = field(default_factory=list)  # simulator.bluez.GattService: what a BLE client (bleak) sees
    # A GATT app on the phone (simulator.companion.GattApp, e.g. CompanionApp: docs/ble-companion.md):
    # its service is served through the fake BlueZ, advertised over LE and listed in Device1.UUIDs.
    companion: Any = None
    att_mtu: int = 517  # the ATT MTU of the car's link to the phone (what GattCharacteristic1.MTU says)
    # HFP
    battery: int = 5  # 0-5
    signal: int = 4  # 0-5
    operator: str = "SimNet"
    roaming: bool = False
    inband_ringing: bool = True  # the phone plays its own ring tone over the car's speakers
    subscriber_number: str = ""  # the phone's own number (Handsfree.SubscriberNumbers), "" = unknown
    hfp_alert_after: float | None = 0.05  # an outgoing call starts alerting after this (None: only when told)
    hfp_remote_answer_after: float | None = None  # the called party answers after this (None: when told)
    hfp_slc_delay: float = 0.0  # service-level connection set-up time when the car powers the modem
    # PBAP
    contacts_vcf: str | None = None  # path to a .vcf, or None for generated contacts
    generated_contacts: int = 0
    pbap_permission: Literal["granted", "pending", "denied"] = "granted"  # the "allow contacts?" prompt
    pbap_version: str = "1.2"  # "1.2": folder counters + DatabaseIdentifier; "1.1": none
    pbap_favourites: bool = True  # offers telecom/fav (PBAP 1.2)
    pbap_style: Literal["android", "iphone", "feature"] = "android"  # vCard quirks (simulator/vcards.py)
    pbap_photo_every: int = 0  # generated contacts: every n-th has a photo (0: none)
    pbap_photo_bytes: int = 4096
    pbap_history: int = 20  # generated calls of each kind (received, dialed, missed)
    pbap_seed: int = 1  # same seed, same generated phonebook
    pbap_rate: int = 0  # transfer speed in bytes/s (0: as fast as possible); a slow phone
    # MAP (simulator/obex_map.py)
    map_notifications: bool = True  # False: the phone never opens MNS (listing only; the car must poll)
    map_types: tuple[str, ...] = ("SMS_GSM", "MMS", "EMAIL")  # what its MAS offers (SupportedTypes)
    map_push_accepted: bool = True  # False: PushMessage fails at the OBEX level (Precondition Failed)
    messages: list[PhoneMessage] = field(default_factory=list)  # every folder, newest last
    # A phone with a history, from files (e.g. a real phone's dump; docs/scenarios.md):
    # call history: a .vcf of call-history cards (X-IRMC-CALL-DATETIME;RECEIVED|DIALED|MISSED:when,
    # as PBAP phones send them) or a directory with ich.vcf/och.vcf/mch.vcf (or cch.vcf); replaces
    # the generated history (read by simulator/obex_pbap.py when the phonebook is first needed).
    history_from: str | None = None
    # messages: a .yaml/.json list [{type, folder, sender, sender_name, text, subject, timestamp,
    # read}] or a directory of bMessage files (*.bmsg, any depth); added to ``messages`` when the
    # phone is made (the field is then cleared, so a copy of the phone does not add them twice).
    messages_from: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.address = self.address.upper()
        if self.messages_from:
            first = max((m.handle for m in self.messages), default=0) + 1
            self.messages = [*self.messages, *load_messages(self.messages_from, first_handle=first)]
            self.messages_from = None

    @property
    def uuids(self) -> list[str]:
        out = [PROFILE_UUIDS[p] for p in self.profiles if p in PROFILE_UUIDS]
        app = self.companion
        if app is not None and getattr(app, "running", True) and app.service_uuid.lower() not in out:
            out.append(app.service_uuid.lower())
        return out

    def offers(self, profile: str) -> bool:
        return profile in self.profiles


def make_email(sender: str, sender_name: str, subject: str, text: str, *, html: bool = False,
               to: str = "driver@example.com") -> str:
    """An RFC 5322 message as a phone's mail app would hand it to MAP."""
    m = email.message.EmailMessage()
    m["From"] = email.utils.formataddr((sender_name, sender)) if sender_name else sender
    m["To"] = to
    m["Subject"] = subject
    m["Date"] = email.utils.formatdate(localtime=True)
    m["Message-ID"] = email.utils.make_msgid(domain="sim.invalid")
    if html:
        m.set_content(text, subtype="html")
    else:
        m.set_content(text)
    return m.as_string()


# -- messages from files ---------------------------------------------------------------------------

MESSAGE_KEYS = {"type": "sms (default), mms or email", "folder": "inbox (default), outbox, sent, deleted, draft",
                "sender": "number or e-mail address", "sender_name": "", "recipient": "", "subject": "",
                "text": "the SMS text or the e-mail's body", "timestamp": "YYYYMMDDTHHMMSS (default: now)",
                "read": "already read on the phone"}
MESSAGE_FOLDERS = ("inbox", "outbox", "sent", "deleted", "draft")
_MAP_TYPES = {"sms": "SMS_GSM", "mms": "MMS", "email": "EMAIL"}


def message_from_dict(m: dict[str, Any], handle: int) -> PhoneMessage:
    """One message as a scenario (or a messages file) writes it; ValueError says what is wrong."""
    unknown = [k for k in m if k not in MESSAGE_KEYS]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]} (known: {', '.join(MESSAGE_KEYS)})")
    for k, v in m.items():
        if k == "read":
            if not isinstance(v, bool):
                raise ValueError(f"read: expected true or false, got {v!r}")
        elif isinstance(v, bool) or v is None or isinstance(v, list | dict):
            raise ValueError(f"{k}: expected text, got {v!r}")
    mtype = _MAP_TYPES.get(str(m.get("type", "sms")).lower())
    if mtype is None:
        raise ValueError(f"type: expected sms, mms or email, got {m.get('type')!r}")
    folder = str(m.get("folder", "inbox"))
    if folder not in MESSAGE_FOLDERS:
        raise ValueError(f"folder: expected {', '.join(MESSAGE_FOLDERS)}, got {folder!r}")
    body = str(m.get("text", ""))
    if mtype == "EMAIL":
        body = make_email(str(m.get("sender", "")), str(m.get("sender_name", "")), str(m.get("subject", "")), body)
    return PhoneMessage(handle=handle, folder=folder, type=mtype, sender=str(m.get("sender", "")),
                        sender_name=str(m.get("sender_name", "")), recipient=str(m.get("recipient", "")),
                        subject=str(m.get("subject", "")), body=body,
                        timestamp=str(m.get("timestamp") or time.strftime("%Y%m%dT%H%M%S")),
                        read=bool(m.get("read", False)))


def load_messages(path: str | Path, *, first_handle: int = 1) -> list[PhoneMessage]:
    """Messages from a .yaml/.yml/.json list, or from a directory of bMessages (``*.bmsg``, read
    in sorted path order; the folder from the bMessage's FOLDER, else the directory's name).
    ValueError (naming the file and the message) for anything it cannot read."""
    p = Path(path)
    if p.is_dir():
        out = []
        for i, f in enumerate(sorted(p.rglob("*.bmsg"))):
            out.append(_from_bmessage(f, first_handle + i))
        return out
    if p.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(f"{p}: expected a .yaml/.json list of messages or a directory of .bmsg files")
    import yaml

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{p}: cannot read ({exc})") from None
    if not isinstance(data, list):
        raise ValueError(f"{p}: expected a list of messages")
    out = []
    for i, m in enumerate(data):
        if not isinstance(m, dict):
            raise ValueError(f"{p}: message {i + 1}: expected a mapping")
        try:
            out.append(message_from_dict(m, first_handle + i))
        except ValueError as exc:
            raise ValueError(f"{p}: message {i + 1}: {exc}") from None
    return out


def _from_bmessage(path: Path, handle: int) -> PhoneMessage:
    from dashbridge.profiles.map import bmessage

    try:
        bm = bmessage.parse(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a bMessage ({exc})") from None
    folder = bm.folder.rstrip("/").rsplit("/", 1)[-1].lower() if bm.folder else path.parent.name.lower()
    if folder not in MESSAGE_FOLDERS:
        folder = "inbox"
    who = bm.sender
    to = bm.recipients[0] if bm.recipients else None
    text = bm.text
    subject = ""
    if bm.type == "EMAIL":
        for line in text.splitlines():
            if not line.strip():
                break
            if line.lower().startswith("subject:"):
                subject = line.split(":", 1)[1].strip()
    when = time.strftime("%Y%m%dT%H%M%S", time.localtime(path.stat().st_mtime))
    return PhoneMessage(handle=handle, folder=folder, type=bm.type if bm.type in ("SMS_GSM", "SMS_CDMA", "MMS", "EMAIL")
                        else "SMS_GSM",
                        sender=(who.tels[0] if who.tels else who.emails[0] if who.emails else "") if who else "",
                        sender_name=(who.formatted_name or who.name.replace(";", " ").strip()) if who else "",
                        recipient=(to.tels[0] if to.tels else to.emails[0] if to.emails else "") if to else "",
                        subject=subject, body=text, timestamp=when, read=bm.status.upper() == "READ")
