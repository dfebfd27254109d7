"""A virtual phone: its identity, radio behaviour and data, shared by every fake.

Each fake (BlueZ, oFono, obexd) reads the fields it needs; the world/control interfaces change
them.  Keep fields plain data so a scenario file can describe a phone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.address = self.address.upper()

    @property
    def uuids(self) -> list[str]:
        return [PROFILE_UUIDS[p] for p in self.profiles if p in PROFILE_UUIDS]

    def offers(self, profile: str) -> bool:
        return profile in self.profiles
