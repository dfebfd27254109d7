"""Typed events components hand to the API layer: one frozen dataclass per kind.

Core and pure (no imports of ours): a component emits them, its API adapter consumes them with
``match`` and ``assert_never``, so mypy reports a kind the adapter forgot and a misspelt kind does
not exist (before, ``_emit("phone_chanegd", ...)`` was silently dropped by an if/elif chain).

Bluetooth (``daemon/bluetooth/manager.py`` -> ``daemon/api/phones.py``, signals of
``org.dashbridge.Phones1``).
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
