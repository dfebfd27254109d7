"""The World: everything it starts, it stops; bad config never starts anything; the recording
dashboard sees the daemon's signals with their documented argument names."""

from __future__ import annotations

import pytest

from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.world import World, WorldError, WorldSpec, to_dbus


async def test_a_world_leaves_nothing_running() -> None:
    w = World(WorldSpec(phones=[VirtualPhone("AA:BB:CC:DD:EE:01", name="Alice")]))
    await w.start()
    try:
        running = w.leftovers()
        # the positive control: while up, the buses and the daemon are there
        assert any("dashbridged" in x for x in running), running
        assert sum("dbus-daemon" in x for x in running) >= 2, running
        assert w.daemon is not None
        assert "org.dashbridge.Phones1" in await w.dashboard.exported_interfaces()  # type: ignore[union-attr]
        await w.restart_daemon()
    finally:
        await w.stop()
    assert w.leftovers() == []


async def test_a_bad_config_override_starts_nothing() -> None:
    w = World(WorldSpec(config={"bluetooth": {"prompt_timeout": "soon"}}))
    with pytest.raises(WorldError, match=r"bluetooth\.prompt_timeout: expected a duration"):
        await w.start()
    assert w.system is None and w.leftovers() == []


async def test_the_dashboard_names_signal_arguments_from_the_documented_xml() -> None:
    w = World(WorldSpec(phones=[VirtualPhone("AA:BB:CC:DD:EE:01", name="Alice", passkey=246810)]))
    await w.start()
    try:
        dash = w.dashboard
        assert dash is not None
        mark = dash.mark
        await dash.call("Phones1.OpenPairingWindow", [0])
        pairing = w.phone_pair("AA:BB:CC:DD:EE:01")
        import asyncio

        task = asyncio.ensure_future(pairing)
        ev = await dash.wait_for(lambda e: e.member == "PromptRequested", 5.0, since=mark)
        assert ev.named["code"] == "246810" and ev.named["kind"] == "confirm_passkey"
        await dash.call("Phones1.AnswerPrompt", [ev.named["prompt"], True, ""])
        assert await asyncio.wait_for(task, 5.0) == "paired"
    finally:
        await w.stop()


def test_yaml_values_become_typed_dbus_values() -> None:
    assert to_dbus(30, "u") == 30
    assert to_dbus([1, 2], "ai") == [1, 2]
    assert to_dbus({"a": 1}, "a{sv}")["a"].signature == "i"
    assert to_dbus(["x", 2], "(su)") == ["x", 2]
    for value, sig in ((True, "u"), ("1", "u"), (1, "s"), ("x", "b"), ([1], "(uu)")):
        with pytest.raises(ValueError):
            to_dbus(value, sig)
