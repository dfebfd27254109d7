"""Scenario steps for the capabilities: phones, the fakes' faults, and dashboard shortcuts.

Each step is registered with :func:`simulator.scenario.action` and runs against the fakes'
in-process APIs (the world holds them) or the daemon's public org.dashbridge API.  A step that
needs a fake declares it (``needs=``): in a world without that fake the scenario fails with a
clear "this world has no ..." instead of pretending.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .scenario import Param, Run, Step, StepFailed, action, fmt_duration, match, value_kind

# =============================================================================================
# Phones (the fake bluetoothd's view of them: simulator/bluez.py)
# =============================================================================================

PAIRING_OUTCOMES = ("paired", "rejected", "phone_rejected", "timeout", "no_agent", "not_found", "busy",
                    "canceled", "failed")


@action("phone", "pair", "the phone starts pairing with the car (the driver tapped the car in the phone's "
        "Bluetooth list); goes on while later steps run — see expect_phone ... pairing:", needs=["bluez"],
        passkey=Param("int", doc="the 6-digit code the phone shows (numeric comparison)"))
async def _phone_pair(run: Run, step: Step) -> None:
    p = run.phone(step)
    assert step.phone is not None
    passkey = run.subst(step.params["passkey"])
    run.pairings[step.phone] = run.spawn(run.w.phone_pair(p.address, passkey))


@action("phone", "out_of_range", "the phone leaves radio range (links drop)", needs=["bluez"])
async def _phone_out(run: Run, step: Step) -> None:
    await run.w.set_in_range(run.phone(step).address, False)


@action("phone", "in_range", "the phone comes back in range (it reconnects by itself if auto_reconnect)",
        needs=["bluez"])
async def _phone_in(run: Run, step: Step) -> None:
    await run.w.set_in_range(run.phone(step).address, True)


@action("phone", "connect", "the phone connects to the car by itself", needs=["bluez"])
async def _phone_connect(run: Run, step: Step) -> None:
    await run.w.phone_connect(run.phone(step).address)


@action("phone", "disconnect", "the phone drops the link (the user switched Bluetooth off)", needs=["bluez"])
async def _phone_disconnect(run: Run, step: Step) -> None:
    await run.w.phone_disconnect(run.phone(step).address)


@action("phone", "will_reject_pairing", "the user will tap Cancel on the phone's pairing dialog", needs=["bluez"])
async def _phone_rejects(run: Run, step: Step) -> None:
    run.w.phone_accepts_pairing(run.phone(step).address, False)


@action("phone", "will_accept_pairing", "the user will tap Pair on the phone's pairing dialog (the default)",
        needs=["bluez"])
async def _phone_accepts(run: Run, step: Step) -> None:
    run.w.phone_accepts_pairing(run.phone(step).address, True)


@action("phone", "forget_car", "the user removes the car from the phone (the car's key no longer works)",
        needs=["bluez"])
async def _phone_forget(run: Run, step: Step) -> None:
    run.w.phone_forgets_car(run.phone(step).address)


@value_kind("expect_phone", Param("str", required=True, doc="the phone's id"),
            "what the phone (and bluetoothd) see of it, within the deadline", needs=["bluez"],
            pairing=Param("str", choices=PAIRING_OUTCOMES, doc="how the phone's latest pairing attempt ended"),
            paired=Param("bool", doc="bluetoothd holds a bond with it"),
            connected=Param("bool", doc="it is connected to the car"),
            trusted=Param("bool", doc="the car marked it trusted"),
            bonded=Param("bool", doc="the phone still holds its side of the bond"),
            within=Param("duration", doc="deadline (default: defaults.within)"))
async def _expect_phone(run: Run, step: Step) -> None:
    p = step.params
    pid = p["expect_phone"]
    if pid not in run.phone_ids:
        raise StepFailed(f"no phone with id {pid} (ids: {', '.join(run.phone_ids)})")
    address = run.phone_ids[pid]
    within = p["within"] if p["within"] is not None else run.sc.within
    if p["pairing"] is not None:
        task = run.pairings.get(pid)
        if task is None:
            raise StepFailed(f"phone {pid} never started pairing (use phone: {pid}, do: pair)")
        try:
            outcome = await asyncio.wait_for(asyncio.shield(task), within)
        except TimeoutError:
            raise StepFailed(f"the phone's pairing had not ended within {fmt_duration(within)}") from None
        if outcome != p["pairing"]:
            raise StepFailed(f"the phone's pairing ended {outcome!r}, expected {p['pairing']!r}")
    want = {k: p[k] for k in ("paired", "connected", "trusted", "bonded") if p[k] is not None}
    if not want:
        return
    bluez = run.w.fake("bluez")
    last: dict[str, Any] = {}

    def holds() -> bool:
        nonlocal last
        last = run.w.phone_state(address)
        return match(want, last) is None

    try:
        await bluez.wait_until(holds, within)
    except TimeoutError:
        raise StepFailed(f"not so within {fmt_duration(within)}: {match(want, last)}") from None


# =============================================================================================
# bluetoothd faults
# =============================================================================================


@action("bluez", "restart", "bluetoothd restarts: org.bluez vanishes with every object, agent and profile, "
        "then comes back (paired phones stay paired)", needs=["bluez"],
        down=Param("duration", doc="how long bluetoothd stays down (default: the fake's restart gap)"))
async def _bluez_restart(run: Run, step: Step) -> None:
    await run.w.fake("bluez").restart(gap=step.params["down"])


@action("bluez", "crash", "bluetoothd dies and stays down (until bluez: revive)", needs=["bluez"])
async def _bluez_crash(run: Run, step: Step) -> None:
    await run.w.fake("bluez").crash()


@action("bluez", "revive", "bluetoothd starts again after a crash", needs=["bluez"])
async def _bluez_revive(run: Run, step: Step) -> None:
    await run.w.fake("bluez").revive()


@action("bluez", "power_off", "the adapter is switched off (rfkill)", needs=["bluez"])
async def _bluez_off(run: Run, step: Step) -> None:
    await run.w.fake("bluez").set_powered(False)


@action("bluez", "power_on", "the adapter is switched on again", needs=["bluez"])
async def _bluez_on(run: Run, step: Step) -> None:
    await run.w.fake("bluez").set_powered(True)


@value_kind("expect_bluez", Param("str", required=True, doc="adapter, or agent"),
            "what bluetoothd holds, within the deadline: the adapter's properties (Discoverable, Pairable, "
            "Alias ...) or the agent the daemon registered ({registered, default, capability})", needs=["bluez"],
            value=Param("matcher", required=True, doc="what it must match"),
            within=Param("duration", doc="deadline (default: defaults.within)"))
async def _expect_bluez(run: Run, step: Step) -> None:
    p = step.params
    what = p["expect_bluez"]
    if what not in ("adapter", "agent"):
        raise StepFailed(f"expect_bluez: expected adapter or agent, got {what!r}")
    within = p["within"] if p["within"] is not None else run.sc.within
    bluez = run.w.fake("bluez")
    want = run.subst(p["value"])
    last: Any = None

    def current() -> Any:
        if what == "adapter":
            return bluez.adapter_props()
        agents = bluez.agents
        default = bluez.default_agent
        if not agents:
            return {"registered": False, "default": False, "capability": ""}
        sender, path, cap = agents[0]
        return {"registered": True, "default": default == (sender, path), "capability": cap}

    def holds() -> bool:
        nonlocal last
        last = current()
        return match(want, last) is None

    try:
        await bluez.wait_until(holds, within)
    except TimeoutError:
        raise StepFailed(f"not so within {fmt_duration(within)}: {match(want, last)}") from None
