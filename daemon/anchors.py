"""Trust anchors: the base64url raw Ed25519 public keys in ``cloud.trust_anchors``.

Core (no imports of ours): the config checks them at load, so a bad key stops the daemon before
anything else, and the cloud's entitlement verification uses the keys loaded here.  ``cryptography``
is imported when first needed, not at daemon start-up.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def b64url_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_anchors(anchors: Mapping[str, str]) -> tuple[dict[str, Ed25519PublicKey], list[str]]:
    """kid -> public key from config (base64url raw 32-byte keys); returns (keys, problems)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, Ed25519PublicKey] = {}
    problems: list[str] = []
    for kid, text in anchors.items():
        try:
            raw = b64url_decode(text.strip())
            if len(raw) != 32:
                raise ValueError(f"{len(raw)} bytes, expected 32")
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error) as exc:
            problems.append(f"cloud.trust_anchors.{kid}: not a base64url Ed25519 public key ({exc})")
    return keys, problems
