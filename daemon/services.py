"""What components offer each other, as protocols (registered in ``AppContext.services``).

Keys: ``"phones"`` -> PhoneDirectory, ``"callerid"`` -> CallerId, ``"navigation"`` -> NavigationSink.
A component that needs another's service looks it up at run time and degrades gracefully when
it is absent (e.g. calls show the number when no contacts are synced).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
