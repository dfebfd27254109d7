"""Typed events components hand to the API layer: one frozen dataclass per kind.

Core and pure (no imports of ours): a component emits them, its API adapter consumes them with
``match`` and ``assert_never``, so mypy reports a kind the adapter forgot and a misspelt kind does
not exist (before, ``_emit("phone_chanegd", ...)`` was silently dropped by an if/elif chain).

Bluetooth (``daemon/bluetooth/manager.py`` -> ``daemon/api/phones.py``, signals of
``org.dashbridge.Phones1``) and the cloud (``daemon/cloud/engine.py`` -> ``daemon/api/cloud.py``,
signals of ``org.dashbridge.Cloud1``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# ------------------------------------------------------------------------------------- bluetooth


@dataclass(frozen=True, slots=True)
class PairingFinished:
    address: str
    success: bool
    reason: str


@dataclass(frozen=True, slots=True)
class PhoneConnected:
    address: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class PhoneDisconnected:
    address: str
    reason: str


@dataclass(frozen=True, slots=True)
class PhoneChanged:
    """``changes``: Phones1 property name -> new value (only the ones that changed)."""

    address: str
    changes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PhoneForgotten:
    address: str


@dataclass(frozen=True, slots=True)
class RepairNeeded:
    address: str
    name: str


@dataclass(frozen=True, slots=True)
class DeviceFound:
    address: str
    name: str
    rssi: int


@dataclass(frozen=True, slots=True)
class PairingWindowChanged:
    open: bool


@dataclass(frozen=True, slots=True)
class BluetoothStateChanged:
    state: str


BluetoothEvent = (PairingFinished | PhoneConnected | PhoneDisconnected | PhoneChanged | PhoneForgotten
                  | RepairNeeded | DeviceFound | PairingWindowChanged | BluetoothStateChanged)
BluetoothListener = Callable[[BluetoothEvent], None]


# ----------------------------------------------------------------------------------------- cloud
# The cloud engine (``daemon/cloud/engine.py``) -> ``daemon/api/cloud.py`` (signals and
# PropertiesChanged of ``org.dashbridge.Cloud1``) and the cloud component's health.


@dataclass(frozen=True, slots=True)
class CloudFeatureChanged:
    name: str
    enabled: bool
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class CloudBackendChanged:
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class CloudRegistrationChanged:
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class CloudLinkChanged:
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class CloudDocumentRejected:
    reason: str


@dataclass(frozen=True, slots=True)
class CloudSyncFinished:
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class CloudStateChanged:
    """Something shown in Cloud1's properties changed (outbox depth, next sync ...)."""


CloudEvent = (CloudFeatureChanged | CloudBackendChanged | CloudRegistrationChanged | CloudLinkChanged
              | CloudDocumentRejected | CloudSyncFinished | CloudStateChanged)
CloudListener = Callable[[CloudEvent], None]
