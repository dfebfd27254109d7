"""Feature names the cloud knows without asking it (a tiny module: imported at start-up)."""

from __future__ import annotations

# Local phone features: never gated by the cloud unless config lists them in
# cloud.gated_local_features (DESIGN.md principle 1, local first).
LOCAL_FEATURES: tuple[str, ...] = ("calls", "contacts", "messages", "message_navigation")
