"""Feature names the cloud knows without asking it."""

from __future__ import annotations

# Local phone features: never gated by the cloud unless config lists them in
# cloud.gated_local_features (DESIGN.md principle 1, local first).  Defined with the config, which
# checks gated_local_features against them (core imports nothing of the cloud).
from ..config import LOCAL_FEATURES as LOCAL_FEATURES
