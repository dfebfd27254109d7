"""Typed bluetooth events (daemon/events.py) reach the right Phones1 signal or property."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from dashbridge.daemon import events as ev
from dashbridge.daemon.api.phones import Phones1


def _phones1() -> tuple[Phones1, list[tuple[str, tuple[Any, ...]]]]:
    listeners: list[Any] = []
    manager = SimpleNamespace(add_listener=listeners.append,
                              prompts=SimpleNamespace(events=SimpleNamespace(requested=[], cancelled=[])))
    iface = Phones1(manager)  # type: ignore[arg-type]
    assert listeners == [iface._on_event]
    seen: list[tuple[str, tuple[Any, ...]]] = []
    for name in ("PairingFinished", "PhoneConnected", "PhoneDisconnected", "PhoneChanged", "PhoneForgotten",
                 "RepairNeeded", "DeviceFound", "emit_properties_changed"):
        setattr(iface, name, lambda *a, _n=name: seen.append((_n, a)))
    return iface, seen


def test_every_event_kind_maps_to_its_signal() -> None:
    iface, seen = _phones1()
    a = "AA:BB:CC:DD:EE:FF"
    for event in (ev.PairingFinished(a, True, ""), ev.PhoneConnected(a, "Pixel", "primary"),
                  ev.PhoneDisconnected(a, "forgotten"), ev.PhoneChanged(a, {"Priority": 2, "Unknown": 1}),
                  ev.PhoneForgotten(a), ev.RepairNeeded(a, "Pixel"), ev.DeviceFound(a, "Pixel", -60),
                  ev.PairingWindowChanged(True), ev.BluetoothStateChanged("ready")):
        iface._on_event(event)
    names = [n for n, _ in seen]
    assert names == ["PairingFinished", "PhoneConnected", "PhoneDisconnected", "PhoneChanged", "PhoneForgotten",
                     "RepairNeeded", "DeviceFound", "emit_properties_changed", "emit_properties_changed"]
    assert seen[0][1] == (a, True, "")
    changed = seen[3][1]
    assert changed[0] == a and list(changed[1]) == ["Priority"]  # unknown keys never reach the bus
    assert changed[1]["Priority"].signature == "u" and changed[1]["Priority"].value == 2
    assert seen[6][1] == (a, "Pixel", -60)
    assert seen[7][1] == ({"PairingWindow": True},) and seen[8][1] == ({"State": "ready"},)


def test_events_are_frozen() -> None:
    e = ev.PhoneForgotten("AA:BB:CC:DD:EE:FF")
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.address = "x"  # type: ignore[misc]
