"""What components offer each other: typed ports (``Protocol``s) in one :class:`Services` object.

The composition root (``daemon/app.py``) sets the fields as it builds the components; a component
reads the field of a service it uses at run time and degrades gracefully when it is absent (e.g.
calls show the number when no contacts are synced).  No string keys: ``mypy`` checks every use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .errors import NotEntitled
from .phones import PhoneDirectory
from .transfers import TransferDir, resolve

if TYPE_CHECKING:
    from .config import Config


class CallerId(Protocol):
    def display_name(self, phone: str, number: str) -> str | None:
        """The contact name for ``number`` in ``phone``'s phonebook, or None.  O(1), no I/O."""
        ...


@dataclass(frozen=True)
class Destination:
    label: str
    lat: float | None = None
    lon: float | None = None
    query: str = ""  # free text (an address) when there are no coordinates
    confidence: float = 1.0


class NavigationSink(Protocol):
    async def offer(self, destination: Destination, *, source: str, source_ref: str,
                    phone: str | None = None) -> str:
        """Offer an intent to the dashboard (durably); returns its id."""
        ...

    async def accept_external(self, destination: Destination, *, source: str, source_ref: str) -> str:
        """Queue a destination for delivery without a dashboard confirmation (send-to-car
        destinations the driver already chose in the app); returns its id."""
        ...

    def drop_phone(self, phone: str) -> None:
        """The phone was forgotten: drop what was offered from it."""
        ...


class DestinationFeedback(Protocol):
    def destination_event(self, source_ref: str, intent_id: str, event: str) -> None:
        """What became of a destination the navigation relay took from this source
        (``source_ref`` is the source's own id): ``shown`` (offered on the dashboard, or handed
        to its navigation service), ``driver_accepted``, ``driver_declined`` or ``expired``.
        Called after the relay committed the change; must not block (no I/O but local SQLite)."""
        ...


class Entitlements(Protocol):
    def feature_enabled(self, name: str) -> bool:
        """Is a feature on right now?"""
        ...

    def feature_reason(self, name: str) -> str:
        """Why the feature is on or off (shown to the driver with ``NotEntitled``)."""
        ...


class RelayedLeases(Protocol):
    async def take_relayed_lease(self, jws: str, *, courier: str) -> tuple[str, str]:
        """A signed entitlement document a courier brought (the driver's phone), verified exactly
        as the backend's.  (outcome, detail); outcome: ``accepted``, ``held`` (already held),
        ``rejected`` (the held lease is kept), ``later`` (cannot verify yet: try again) or
        ``ignored`` (the cloud is disabled: this car uses no leases)."""
        ...


@dataclass
class Services:
    """The services components offer each other, set by the composition root."""

    # The directory of connected phones: written by bluetooth, read by HFP/PBAP/MAP.  It exists
    # before any component, so a component built alone (tests) still has one.
    phones: PhoneDirectory = field(default_factory=PhoneDirectory)
    callerid: CallerId | None = None  # contacts -> calls, messages
    navigation: NavigationSink | None = None  # navigation relay <- messages, cloud
    # cloud <- navigation relay: what became of send-to-car destinations (source "cloud")
    cloud_destinations: DestinationFeedback | None = None
    entitlements: Entitlements | None = None  # cloud -> whoever gates a feature
    relayed_leases: RelayedLeases | None = None  # cloud <- companion (leases the phone relays)
    transfers: TransferDir | None = None  # the obex transfer directory (see transfer_dir)

    def feature_on(self, feature: str) -> bool:
        """Entitlements as the components ask them: with no cloud component, everything local is on."""
        return self.entitlements is None or self.entitlements.feature_enabled(feature)

    def require(self, feature: str) -> None:
        """Raise ``NotEntitled`` when ``feature`` is off right now (local phone features are on
        unless the integrator lists them in ``cloud.gated_local_features``)."""
        if self.entitlements is not None and not self.entitlements.feature_enabled(feature):
            raise NotEntitled(f"{feature} is switched off for this car: {self.entitlements.feature_reason(feature)}")

    def transfer_dir(self, cfg: Config) -> TransferDir:
        """The daemon's one :class:`TransferDir`, created (and cleared) the first time it is asked
        for — when the contacts and messages components are built at start."""
        if self.transfers is None:
            self.transfers = TransferDir(resolve(cfg)).prepare()
        return self.transfers
