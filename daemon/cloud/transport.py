"""The HTTP exchange the cloud client needs, as a protocol, so the engine runs over real HTTPS
in the daemon (``daemon.cloud.https``, aiohttp, imported only when the cloud starts) and over an
in-process stand-in in the fleet bench."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names, first value
    body: bytes = b""
    url: str = ""


class Transport(Protocol):
    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                   timeout: float) -> HttpResponse:
        """One request, no redirects followed.  Raises ``protocol.Unreachable`` (or
        ``TlsUntrusted``) when no HTTP answer arrives within ``timeout`` seconds."""
        ...

    async def close(self) -> None: ...
