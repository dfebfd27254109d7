"""Scenario steps for the capabilities: phones, the fakes' faults, and dashboard shortcuts.

Each step is registered with :func:`registry.action` and runs against the fakes'
in-process APIs (the world holds them) or the daemon's public org.dashbridge API.  A step that
needs a fake declares it (``needs=``): in a world without that fake the scenario fails with a
clear "this world has no ..." instead of pretending.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .builtin_steps import dashboard_call
from .matchers import match
from .registry import Param, Step, StepFailed, action, value_kind
from .runner import Run
from .values import fmt_duration

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
    within = run.within(step)
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
    await run.w.restart_bluez(step.params["down"])


@action("bluez", "crash", "bluetoothd dies and stays down (until bluez: revive)", needs=["bluez"])
async def _bluez_crash(run: Run, step: Step) -> None:
    await run.w.crash_bluez()


@action("bluez", "revive", "bluetoothd starts again after a crash", needs=["bluez"])
async def _bluez_revive(run: Run, step: Step) -> None:
    await run.w.revive_bluez()


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
    within = run.within(step)
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


# =============================================================================================
# Calls: the phone's side (simulator/ofono.py) and the dashboard's (org.dashbridge.Calls1)
# =============================================================================================


@action("phone", "ring", "a call comes in to the phone (or waits, during another call)", needs=["ofono"],
        number=Param("str", required=True, doc="the caller's number (withheld: hidden)"),
        name=Param("str", default="", doc="the caller name the network sends (CNAP), if any"))
async def _phone_ring(run: Run, step: Step) -> None:
    p = step.params
    run.w.fake("ofono").incoming_call(run.phone(step).address, str(run.subst(p["number"])),
                                      str(run.subst(p["name"])))


@action("phone", "remote_answer", "the other party picks up the outgoing call (or the driver answers on "
        "the handset)", needs=["ofono"])
async def _phone_remote_answer(run: Run, step: Step) -> None:
    run.w.fake("ofono").remote_answer(run.phone(step).address)


@action("phone", "remote_alerting", "the other party's phone starts ringing (outgoing call)", needs=["ofono"])
async def _phone_remote_alerting(run: Run, step: Step) -> None:
    run.w.fake("ofono").remote_alerting(run.phone(step).address)


@action("phone", "remote_hangup", "the other party (or the network) ends a call", needs=["ofono"],
        reason=Param("str", default="remote", choices=("remote", "network"), doc="who ended it"))
async def _phone_remote_hangup(run: Run, step: Step) -> None:
    run.w.fake("ofono").remote_hangup(run.phone(step).address, None, step.params["reason"])


@action("phone", "battery", "the phone's battery level changes (0-5 bars)", needs=["ofono"],
        level=Param("int", required=True, doc="0-5"))
async def _phone_battery(run: Run, step: Step) -> None:
    run.w.fake("ofono").set_battery(run.phone(step).address, step.params["level"])


@action("phone", "signal", "the phone's network signal changes (0-5 bars; 0 = no network)", needs=["ofono"],
        level=Param("int", required=True, doc="0-5"))
async def _phone_signal(run: Run, step: Step) -> None:
    run.w.fake("ofono").set_signal(run.phone(step).address, step.params["level"])


@action("phone", "operator", "the phone's network operator changes", needs=["ofono"],
        name=Param("str", required=True, doc="operator name"))
async def _phone_operator(run: Run, step: Step) -> None:
    run.w.fake("ofono").set_operator(run.phone(step).address, step.params["name"])


@action("ofono", "restart", "ofonod restarts: org.ofono vanishes with every modem and call object, then "
        "comes back with unpowered modems (the phones keep their calls)", needs=["ofono"])
async def _ofono_restart(run: Run, step: Step) -> None:
    await run.w.fake("ofono").restart()


@action("ofono", "link_loss", "the hands-free link to a phone drops (interfaces and calls vanish without "
        "CallRemoved)", needs=["ofono"], phone=Param("str", required=True, doc="the phone's id"))
async def _ofono_link_loss(run: Run, step: Step) -> None:
    run.w.fake("ofono").link_loss(_phone_address(run, step.params["phone"]))


@action("ofono", "hang", "ofonod stops answering method calls (signals still flow)", needs=["ofono"])
async def _ofono_hang(run: Run, step: Step) -> None:
    run.w.fake("ofono").set_unresponsive(True)


@action("ofono", "unhang", "ofonod answers method calls again", needs=["ofono"])
async def _ofono_unhang(run: Run, step: Step) -> None:
    run.w.fake("ofono").set_unresponsive(False)


def _phone_address(run: Run, ref: str) -> str:
    ref = str(run.subst(ref))
    if ref in run.phone_ids:
        return run.phone_ids[ref]
    return run.w.phone(ref).address


def _latest_call(run: Run, states: tuple[str, ...] | None = None) -> str:
    """The id of the most recent call the dashboard was told about (in one of ``states``)."""
    live: dict[str, str] = {}
    for ev in run.dash.events:
        if ev.interface != "org.dashbridge.Calls1":
            continue
        if ev.member in ("CallAdded", "CallChanged"):
            props = ev.named.get("properties", {})
            live[str(ev.named.get("call"))] = str(props.get("State", ""))
        elif ev.member == "CallRemoved":
            live.pop(str(ev.named.get("call")), None)
    cands = [c for c, st in live.items() if states is None or st in states]
    if not cands:
        want = f" in state {' or '.join(states)}" if states else ""
        raise StepFailed(f"the dashboard has seen no call{want} (give call: explicitly)")
    return cands[-1]


@action("dashboard", "dial", "the driver dials a number from the dashboard (Calls1.Dial)",
        number=Param("str", required=True, doc="the number to dial"),
        phone=Param("str", default="", doc="the phone's id (default: the primary phone)"),
        expect_error=Param("str", doc="the call must fail with this error (e.g. InvalidArguments)"),
        save=Param("name", doc="keep the call id under this name"))
async def _dash_dial(run: Run, step: Step) -> None:
    p = step.params
    phone = _phone_address(run, p["phone"]) if p["phone"] else ""
    await dashboard_call(run, "Calls1.Dial", [str(run.subst(p["number"])), phone], expect_error=p["expect_error"],
                         save=p["save"])


@action("dashboard", "answer", "the driver answers a ringing call (Calls1.Answer)",
        call=Param("str", doc="the call id (default: the latest ringing call)"),
        expect_error=Param("str", doc="the call must fail with this error"))
async def _dash_answer(run: Run, step: Step) -> None:
    call = run.subst(step.params["call"]) or _latest_call(run, ("incoming", "waiting"))
    await dashboard_call(run, "Calls1.Answer", [call], expect_error=step.params["expect_error"])


@action("dashboard", "hangup", "the driver ends (or rejects) a call (Calls1.Hangup)",
        call=Param("str", doc="the call id (default: the latest call)"),
        expect_error=Param("str", doc="the call must fail with this error"))
async def _dash_hangup(run: Run, step: Step) -> None:
    call = run.subst(step.params["call"]) or _latest_call(run)
    await dashboard_call(run, "Calls1.Hangup", [call], expect_error=step.params["expect_error"])


# =============================================================================================
# obexd faults, and messages reaching the phone (simulator/obex.py, simulator/obex_map.py)
# =============================================================================================


@action("obexd", "restart", "obexd restarts: org.bluez.obex vanishes with every session and transfer, then "
        "a new obexd owns the name", needs=["obexd"])
async def _obexd_restart(run: Run, step: Step) -> None:
    await run.w.fake("obexd").restart()


@action("obexd", "crash", "obexd dies and stays down (until obexd: resume); running transfers stop",
        needs=["obexd"])
async def _obexd_crash(run: Run, step: Step) -> None:
    await run.w.fake("obexd").crash()


@action("obexd", "resume", "a new obexd starts after a crash", needs=["obexd"])
async def _obexd_resume(run: Run, step: Step) -> None:
    await run.w.fake("obexd").resume()


@action("obexd", "fail_next_transfer", "the next transfer from a phone fails part-way (link trouble)",
        needs=["obexd"], phone=Param("str", required=True, doc="the phone's id"),
        after_bytes=Param("int", default=0, doc="bytes delivered before it fails"))
async def _obexd_fail(run: Run, step: Step) -> None:
    run.w.fake("obexd").control.fail_next_transfer(_phone_address(run, step.params["phone"]),
                                                   step.params["after_bytes"])


@action("obexd", "slow", "transfers from a phone run at this rate (a slow phone)", needs=["obexd"],
        phone=Param("str", required=True, doc="the phone's id"),
        bytes_per_s=Param("int", required=True, doc="transfer rate (0: as fast as possible)"))
async def _obexd_slow(run: Run, step: Step) -> None:
    run.w.fake("obexd").control.set_rate(_phone_address(run, step.params["phone"]), step.params["bytes_per_s"])


@action("phone", "receive_sms", "a text message reaches the phone (it notifies the car if it delivers MAP "
        "notifications)", needs=["obexd"],
        sender=Param("str", required=True, doc="the sender's number"),
        name=Param("str", default="", doc="the sender's name as the phone knows it"),
        text=Param("str", required=True, doc="the message"))
async def _phone_sms(run: Run, step: Step) -> None:
    p = step.params
    run.w.deliver_message(run.phone(step).address, "SMS_GSM", str(run.subst(p["sender"])),
                          str(run.subst(p["text"])), sender_name=str(run.subst(p["name"])))


@action("phone", "receive_email", "an e-mail reaches the phone", needs=["obexd"],
        sender=Param("str", required=True, doc="the sender's address"),
        name=Param("str", default="", doc="the sender's name"),
        subject=Param("str", default="", doc="the subject"),
        text=Param("str", required=True, doc="the body text"),
        html=Param("bool", default=False, doc="send it as HTML only"))
async def _phone_email(run: Run, step: Step) -> None:
    p = step.params
    run.w.deliver_message(run.phone(step).address, "EMAIL", str(run.subst(p["sender"])), str(run.subst(p["text"])),
                          subject=str(run.subst(p["subject"])), sender_name=str(run.subst(p["name"])),
                          html=p["html"])


@action("phone", "map_notifications", "the phone does (on: true) or does not deliver new-message "
        "notifications (the car must poll)", needs=["obexd"], on=Param("bool", required=True, doc="on or off"))
async def _phone_map_notify(run: Run, step: Step) -> None:
    run.phone(step).map_notifications = step.params["on"]


@action("phone", "refuse_sends", "the phone refuses (on: true) messages the car pushes (Precondition Failed)",
        needs=["obexd"], on=Param("bool", default=True, doc="refuse (true) or accept again (false)"))
async def _phone_refuse_push(run: Run, step: Step) -> None:
    run.phone(step).map_push_accepted = not step.params["on"]


@value_kind("expect_outbox", Param("str", required=True, doc="the phone's id"),
            "what the car sent through the phone (its MAP outbox) — re-checked on every daemon signal",
            needs=["obexd"],
            value=Param("matcher", required=True,
                        doc="list of {recipient, type, subject, body}; e.g. {$contains: {body: {$contains: OK}}}"),
            within=Param("duration", doc="deadline (default: defaults.within)"))
async def _expect_outbox(run: Run, step: Step) -> None:
    p = step.params
    address = _phone_address(run, p["expect_outbox"])
    within = run.within(step)
    want = run.subst(p["value"])
    last: Any = None

    def current() -> list[dict[str, Any]]:
        return [{"recipient": m.recipient, "type": m.type, "subject": m.subject, "body": m.body}
                for m in run.w.phone_outbox(address)]

    try:
        async with asyncio.timeout(within):
            while True:
                nxt = asyncio.ensure_future(run.dash.changed())
                try:
                    last = current()
                    if match(want, last) is None:
                        return
                    await nxt
                finally:
                    nxt.cancel()
    except TimeoutError:
        raise StepFailed(f"not so within {fmt_duration(within)}: {match(want, last)}") from None


# =============================================================================================
# Pairing and phones: the dashboard's side (org.dashbridge.Phones1)
# =============================================================================================


def _open_prompt(run: Run) -> int:
    """The most recent prompt the dashboard was shown that has not ended or been answered."""
    open_: dict[int, str] = {}
    for ev in run.dash.events:
        if ev.interface != "org.dashbridge.Phones1":
            continue
        if ev.member == "PromptRequested":
            open_[int(ev.named["prompt"])] = str(ev.named.get("kind", ""))
        elif ev.member == "PromptCancelled":
            open_.pop(int(ev.named["prompt"]), None)
    cands = [p for p in open_ if p not in run.answered]
    if not cands:
        raise StepFailed("the dashboard has no open prompt to answer (wait for it with expect_signal: "
                         "Phones1.PromptRequested, or give prompt: explicitly)")
    return cands[-1]


@action("dashboard", "open_pairing_window", "the driver taps \"add a phone\" (Phones1.OpenPairingWindow)",
        seconds=Param("int", default=0, doc="how long (0: bluetooth.pairing_window from config)"),
        expect_error=Param("str", doc="the call must fail with this error"))
async def _dash_open_window(run: Run, step: Step) -> None:
    await dashboard_call(run, "Phones1.OpenPairingWindow", [step.params["seconds"]],
                         expect_error=step.params["expect_error"])


@action("dashboard", "close_pairing_window", "the driver closes the pairing window (Phones1.ClosePairingWindow)")
async def _dash_close_window(run: Run, step: Step) -> None:
    await dashboard_call(run, "Phones1.ClosePairingWindow", [])


@action("dashboard", "answer_prompt", "the driver answers the pairing prompt on screen (Phones1.AnswerPrompt)",
        accept=Param("bool", default=True, doc="yes (true) or no (false)"),
        value=Param("str", default="", doc="the PIN or passkey the driver typed, for enter_pin/enter_passkey"),
        prompt=Param("int", doc="the prompt's id (default: the latest open prompt)"),
        expect_error=Param("str", doc="the call must fail with this error (e.g. NotFound for a stale prompt)"))
async def _dash_answer_prompt(run: Run, step: Step) -> None:
    p = step.params
    prompt = run.subst(p["prompt"]) if p["prompt"] is not None else _open_prompt(run)
    run.answered.add(int(prompt))
    await dashboard_call(run, "Phones1.AnswerPrompt", [int(prompt), p["accept"], str(run.subst(p["value"]))],
                         expect_error=p["expect_error"])


def _phone_method(method: str, doc: str) -> None:
    async def handler(run: Run, step: Step) -> None:
        await dashboard_call(run, f"Phones1.{method}", [_phone_address(run, step.params["phone"])],
                             expect_error=step.params["expect_error"])

    action("dashboard", method.lower(), doc,
           phone=Param("str", required=True, doc="the phone's id (or its address)"),
           expect_error=Param("str", doc="the call must fail with this error"))(handler)


_phone_method("Pair", "the driver picks a phone the car found and pairs from the car side (Phones1.Pair)")
_phone_method("Connect", "the driver connects a paired phone (Phones1.Connect)")
_phone_method("Disconnect", "the driver disconnects a phone (Phones1.Disconnect)")
_phone_method("Forget", "the driver forgets a phone: unpaired, and its data deleted (Phones1.Forget)")


@action("dashboard", "set_priority", "the driver moves a phone in the reconnect order (Phones1.SetPriority)",
        phone=Param("str", required=True, doc="the phone's id"),
        position=Param("int", required=True, doc="0 = first"),
        expect_error=Param("str", doc="the call must fail with this error"))
async def _dash_priority(run: Run, step: Step) -> None:
    p = step.params
    await dashboard_call(run, "Phones1.SetPriority", [_phone_address(run, p["phone"]), p["position"]],
                         expect_error=p["expect_error"])


# =============================================================================================
# Navigation: the dashboard's navigation service (simulator/navsvc.py) and Navigation1
# =============================================================================================


@action("navigation", "start", "the dashboard's navigation service starts (owns its bus name)",
        needs=["navigation"])
async def _nav_start(run: Run, step: Step) -> None:
    await run.w.navigation_start()


@action("navigation", "stop", "the navigation service stops (its bus name goes away)", needs=["navigation"])
async def _nav_stop(run: Run, step: Step) -> None:
    await run.w.navigation_stop()


@action("navigation", "mode", "how the navigation service answers from now on", needs=["navigation"],
        answer=Param("str", required=True, choices=("ok", "error", "hang"),
                     doc="ok; error (org.dashboard.Navigation.Error.Unavailable); hang (never answers)"))
async def _nav_mode(run: Run, step: Step) -> None:
    run.w.fake("navigation").set_mode(step.params["answer"])


@value_kind("expect_navigation", Param("str", required=True, choices=("received",),
                                       doc="received: the destinations the service was given"),
            "what the dashboard's navigation service received (a list of destination dictionaries: "
            "id, kind, label, query, url, source, confidence, latitude, longitude), within the deadline",
            needs=["navigation"],
            value=Param("matcher", required=True, doc="e.g. {$contains: {label: {$contains: Baker}}}"),
            within=Param("duration", doc="deadline (default: defaults.within)"))
async def _expect_navigation(run: Run, step: Step) -> None:
    p = step.params
    nav = run.w.fake("navigation")
    within = run.within(step)
    want = run.subst(p["value"])
    last: Any = None
    try:
        async with asyncio.timeout(within):
            while True:
                last = list(nav.destinations)
                if match(want, last) is None:
                    return
                # The next destination the service receives, or the next daemon signal.
                waits = [asyncio.ensure_future(nav.wait_for(len(last) + 1, within + 1)),
                         asyncio.ensure_future(run.dash.changed())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
    except TimeoutError:
        raise StepFailed(f"not so within {fmt_duration(within)}: {match(want, last)}") from None


def _latest_intent(run: Run) -> str:
    """The most recent intent offered to the dashboard that is still pending."""
    pending: dict[str, str] = {}
    for ev in run.dash.events:
        if ev.interface != "org.dashbridge.Navigation1":
            continue
        if ev.member == "IntentOffered":
            intent = ev.named.get("intent", {})
            pending[str(intent.get("id"))] = str(intent.get("state", "offered"))
        elif ev.member == "IntentChanged":
            pending[str(ev.named.get("intent_id"))] = str(ev.named.get("state"))
    cands = [i for i, st in pending.items() if st in ("offered", "pending", "")]
    if not cands:
        raise StepFailed("the dashboard has been offered no intent to act on (wait for "
                         "expect_signal: Navigation1.IntentOffered, or give intent: explicitly)")
    return cands[-1]


@action("dashboard", "accept_intent", "the driver taps \"navigate there\" (Navigation1.Accept)",
        intent=Param("str", doc="the intent id (default: the latest one offered)"),
        expect_error=Param("str", doc="the call must fail with this error"),
        save=Param("name", doc="keep the resulting state under this name"))
async def _dash_accept(run: Run, step: Step) -> None:
    p = step.params
    intent = run.subst(p["intent"]) or _latest_intent(run)
    await dashboard_call(run, "Navigation1.Accept", [intent], expect_error=p["expect_error"], save=p["save"])


@action("dashboard", "dismiss_intent", "the driver dismisses an offered destination (Navigation1.Dismiss)",
        intent=Param("str", doc="the intent id (default: the latest one offered)"),
        expect_error=Param("str", doc="the call must fail with this error"))
async def _dash_dismiss(run: Run, step: Step) -> None:
    p = step.params
    intent = run.subst(p["intent"]) or _latest_intent(run)
    await dashboard_call(run, "Navigation1.Dismiss", [intent], expect_error=p["expect_error"])


# =============================================================================================
# The carmaker's backend (simulator/cloud.py) and simulated time
# =============================================================================================

LISTENER_MODES = ("up", "offline", "blackhole", "untrusted_tls")


@value_kind("advance", Param("duration", required=True, doc="how much simulated time passes, e.g. 3w"),
            "simulated time passes at once for the daemon's cloud clock and the backend (leases, grace, "
            "retries, the sync schedule); radios and buses keep real time")
async def _advance(run: Run, step: Step) -> None:
    await run.w.advance(step.params["advance"])


def _backend(run: Run) -> Any:
    return run.w.fake("backend")


@action("backend", "offline", "the backend's address refuses connections (the carmaker's outage)",
        needs=["backend"], address=Param("str", default="old", choices=("old", "new"),
                                          doc="the car's configured address (old) or the migrated one (new)"))
async def _backend_offline(run: Run, step: Step) -> None:
    await _backend(run).set_listener(step.params["address"], "offline")


@action("backend", "online", "the backend answers again at that address", needs=["backend"],
        address=Param("str", default="old", choices=("old", "new"), doc="old or new"))
async def _backend_online(run: Run, step: Step) -> None:
    await _backend(run).set_listener(step.params["address"], "up")


@action("backend", "blackhole", "the backend accepts connections and never answers", needs=["backend"],
        address=Param("str", default="old", choices=("old", "new"), doc="old or new"))
async def _backend_blackhole(run: Run, step: Step) -> None:
    await _backend(run).set_listener(step.params["address"], "blackhole")


@action("backend", "untrusted_tls", "the backend's address presents a certificate the car must not trust",
        needs=["backend"], address=Param("str", default="old", choices=("old", "new"), doc="old or new"))
async def _backend_untrusted(run: Run, step: Step) -> None:
    await _backend(run).set_listener(step.params["address"], "untrusted_tls")


@action("backend", "migrate", "the backend migrates: migrating = a new address serves API v1+v2 and the old "
        "one answers 308 to it; migrated = old endpoints answer 410, v1 is retired", needs=["backend"],
        phase=Param("str", required=True, choices=("migrating", "migrated"), doc="migrating or migrated"))
async def _backend_migrate(run: Run, step: Step) -> None:
    await _backend(run).migrate(step.params["phase"])


@action("backend", "fault", "the backend misbehaves on requests (until backend: clear_faults, or count times)",
        needs=["backend"],
        mode=Param("str", required=True, choices=("status", "slow", "malformed_json", "wrong_content_type",
                                                  "drop_response", "bad_signature", "expired", "rolled_back",
                                                  "wrong_vehicle"), doc="what goes wrong"),
        status=Param("int", default=0, doc="for mode status: 500, 502, 503, 429 ..."),
        retry_after=Param("str", doc="for mode status: the Retry-After header"),
        delay=Param("duration", default=0.0, doc="for mode slow: how long each answer takes"),
        count=Param("int", doc="only this many times (default: until cleared)"),
        op=Param("str", doc="only for this operation (discovery, register, entitlements, destinations ...)"))
async def _backend_fault(run: Run, step: Step) -> None:
    p = step.params
    kw: dict[str, Any] = {"status": p["status"], "retry_after": p["retry_after"], "delay": p["delay"],
                          "count": p["count"], "op": p["op"]}
    _backend(run).set_fault(p["mode"], **kw)


@action("backend", "clear_faults", "the backend behaves again", needs=["backend"])
async def _backend_clear(run: Run, step: Step) -> None:
    _backend(run).clear_faults()


@action("backend", "approve", "the carmaker approves a pending registration", needs=["backend"])
async def _backend_approve(run: Run, step: Step) -> None:
    _backend(run).approve(run.w.vehicle_id)


@action("backend", "send_to_car", "someone sends a destination to the car from the carmaker's app",
        needs=["backend"], label=Param("str", required=True, doc="what the driver sees"),
        latitude=Param("number", doc="degrees"), longitude=Param("number", doc="degrees"),
        address=Param("str", default="", doc="a street address"))
async def _backend_send(run: Run, step: Step) -> None:
    p = step.params
    _backend(run).send_to_car(run.w.vehicle_id, str(run.subst(p["label"])), lat=p["latitude"],
                              lon=p["longitude"], address=str(run.subst(p["address"])))


@action("backend", "issue_entitlements", "the backend issues a new entitlements document", needs=["backend"],
        features=Param("map", doc="feature -> {enabled: true|false, ...}"),
        lease=Param("duration", doc="how long it is valid"))
async def _backend_issue(run: Run, step: Step) -> None:
    _backend(run).issue_entitlements(run.w.vehicle_id, step.params["features"], lease=step.params["lease"])


def _backend_view(run: Run, what: str) -> Any:
    b = _backend(run)
    if what == "requests":
        return [{"listener": r.listener, "method": r.method, "path": r.path, "status": r.status, "op": r.op,
                 "key": r.key, "replayed": r.replayed, "version": r.version} for r in b.log]
    if what == "effects":
        return [{"op": e.op, "vehicle": e.vehicle, "key": e.key, "detail": e.detail} for e in b.effects]
    if what == "idempotency":
        return [{"vehicle": vid, "key": key, "status": status} for (vid, key), (_fp, _r, status) in
                sorted(b.idempotency.items())]
    v = b.vehicles[run.w.vehicle_id]
    return {"registration": v.registration, "linked": v.linked, "entitlements_version": v.ent_version,
            "phase": b.phase, "old": b.old.mode, "new": b.new.mode,
            "destinations": [{k: x for k, x in d.items()} for d in v.destinations.values()]}


@value_kind("expect_backend", Param("str", required=True, choices=("requests", "effects", "idempotency", "state"),
                                    doc="requests (the log), effects (what the backend did, for exactly-once), "
                                        "idempotency (the store), state (registration, phase ...)"),
            "what the backend saw or did, within the deadline (re-checked on every request it gets and every "
            "daemon signal)", needs=["backend"],
            value=Param("matcher", required=True,
                        doc="e.g. {$contains: {op: register}} or, for exactly once, "
                            "{$each: ..., $len: 1} on a filtered view (see where)"),
            where=Param("matcher", doc="only the items (requests/effects/idempotency) matching this"),
            within=Param("duration", doc="deadline (default: defaults.within)"))
async def _expect_backend(run: Run, step: Step) -> None:
    p = step.params
    b = _backend(run)
    what = p["expect_backend"]
    within = run.within(step)
    want = run.subst(p["value"])
    where = run.subst(p["where"]) if p["where"] is not None else None
    last: Any = None

    def current() -> Any:
        view = _backend_view(run, what)
        if where is not None and isinstance(view, list):
            view = [x for x in view if match(where, x) is None]
        return view

    try:
        async with asyncio.timeout(within):
            while True:
                b.request_event.clear()
                last = current()
                if match(want, last) is None:
                    return
                waits = [asyncio.ensure_future(b.request_event.wait()), asyncio.ensure_future(run.dash.changed())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
    except TimeoutError:
        raise StepFailed(f"not so within {fmt_duration(within)}: {match(want, last)}\n"
                         f"  last view: {str(last)[:600]}") from None


# =============================================================================================
# Contacts: the phone's side of PBAP (simulator/obex_pbap.py)
# =============================================================================================


@action("phone", "contacts_permission", "the user answers (or re-opens) the phone's \"allow access to "
        "contacts?\" prompt", needs=["obexd"],
        state=Param("str", required=True, choices=("granted", "pending", "denied"), doc="the answer"))
async def _phone_pbap_permission(run: Run, step: Step) -> None:
    from ..obex_pbap import set_permission

    set_permission(run.w.fake("obexd"), run.phone(step).address, step.params["state"])


@action("phone", "edit_contacts", "the user edits contacts on the phone (its change counters move)",
        needs=["obexd"], added=Param("int", default=0, doc="new contacts"),
        removed=Param("int", default=0, doc="deleted contacts"), renamed=Param("int", default=0, doc="renamed"))
async def _phone_pbap_edit(run: Run, step: Step) -> None:
    from ..obex_pbap import change_phonebook

    p = step.params
    change_phonebook(run.w.fake("obexd"), run.phone(step).address, added=p["added"], removed=p["removed"],
                     renamed=p["renamed"])


# =============================================================================================
# The cloud: the dashboard's side (org.dashbridge.Cloud1)
# =============================================================================================


@action("dashboard", "register", "the driver asks to register the car with the carmaker (Cloud1.Register)",
        result=Param("matcher", doc="what the reply must match (pending, registered)"),
        expect_error=Param("str", doc="the call must fail with this error"))
async def _dash_register(run: Run, step: Step) -> None:
    await dashboard_call(run, "Cloud1.Register", [], result=step.params["result"],
                         expect_error=step.params["expect_error"])


@action("dashboard", "link_account", "the driver links the car to their account (Cloud1.LinkAccount)",
        code=Param("str", default="", doc="the code from the carmaker's app (empty: ask for a code to show)"),
        result=Param("matcher", doc="what the reply must match"),
        expect_error=Param("str", doc="the call must fail with this error"))
async def _dash_link(run: Run, step: Step) -> None:
    await dashboard_call(run, "Cloud1.LinkAccount", [str(run.subst(step.params["code"]))],
                         result=step.params["result"], expect_error=step.params["expect_error"])


# =============================================================================================
# The companion app on a phone (simulator/companion.py, docs/ble-companion.md)
# =============================================================================================


@action("phone", "companion_send_destination", "the driver picks a destination in the phone's companion app "
        "(\"send to car\"): pending until the car acknowledges it", needs=["bluez"],
        label=Param("str", required=True, doc="what the dashboard shows"),
        lat=Param("number", doc="latitude (with lon)"),
        lon=Param("number", doc="longitude (with lat)"),
        address=Param("str", doc="free text for the car's navigation to search"),
        id=Param("str", doc="the destination's id (default: a new UUID)"),
        save=Param("name", doc="keep the id under this name"))
async def _companion_send_destination(run: Run, step: Step) -> None:
    p = step.params
    try:
        did = run.w.companion_send_destination(
            run.phone(step).address, str(run.subst(p["label"])), lat=p["lat"], lon=p["lon"],
            address=None if p["address"] is None else str(run.subst(p["address"])),
            id=None if p["id"] is None else str(run.subst(p["id"])))
    except Exception as exc:
        raise StepFailed(str(exc)) from None
    if p["save"]:
        run.saved[p["save"]] = did


@action("phone", "companion_lease", "the companion app fetched a lease for this car and serves it (by default "
        "a new entitlement document the backend issues; the options make one the car must refuse)",
        needs=["bluez", "backend"],
        version=Param("int", doc="the lease's version (lower than the car's: a roll-back)"),
        forged=Param("bool", default=False, doc="signed by a key the car does not trust"),
        vehicle=Param("str", doc="for another vehicle id"),
        expired=Param("bool", default=False, doc="expired an hour ago"),
        empty=Param("bool", default=False, doc="the app has no lease (an empty document)"))
async def _companion_lease(run: Run, step: Step) -> None:
    p = step.params
    try:
        run.w.companion_lease(run.phone(step).address, version=p["version"], forged=p["forged"],
                              vehicle=p["vehicle"], expired=p["expired"], empty=p["empty"])
    except Exception as exc:
        raise StepFailed(str(exc)) from None


@action("phone", "companion_app", "the companion app is started or stopped on the phone (its GATT service "
        "comes or goes)", needs=["bluez"], running=Param("bool", required=True, doc="started (true) or stopped"))
async def _companion_app(run: Run, step: Step) -> None:
    try:
        run.w.companion_running(run.phone(step).address, step.params["running"])
    except Exception as exc:
        raise StepFailed(str(exc)) from None


@action("phone", "le_connect", "the phone makes an LE connection to the car (bonded or not): its GATT "
        "services, the companion service among them, are resolved", needs=["bluez"])
async def _le_connect(run: Run, step: Step) -> None:
    if not await run.w.le_connect(run.phone(step).address):
        raise StepFailed("no LE connection: the phone is out of range or the adapter is off")


@action("phone", "expect_companion", "the companion app's state matches within the deadline: what the car "
        "acknowledged, what is still pending, what it read", needs=["bluez"],
        acked=Param("matcher", doc="ids the car acknowledged, in order (e.g. [g1, b2])"),
        rejected=Param("matcher", doc="[[id, reason], ...] the car rejected"),
        pending=Param("matcher", doc="ids still pending"),
        lease_reads=Param("matcher", doc="how many lease chunks the car read (e.g. {$ge: 1})"),
        within=Param("duration", doc="deadline (default: defaults.within)"))
async def _expect_companion(run: Run, step: Step) -> None:
    from ..companion import LEASE_UUID

    p = step.params
    within = run.within(step)
    try:
        app = run.w.companion_app(run.phone(step).address)
    except Exception as exc:
        raise StepFailed(str(exc)) from None

    def why() -> str | None:
        got = {"acked": list(app.acked_ids), "rejected": [list(r) for r in app.rejected],
               "pending": list(app.pending_ids), "lease_reads": sum(1 for r in app.reads if r.uuid == LEASE_UUID)}
        for key, value in got.items():
            if p[key] is not None:
                diff = match(run.subst(p[key]), value)
                if diff is not None:
                    return f"{key}: {diff} (is {value})"
        return None

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (diff := why()) is not None:
        if loop.time() >= deadline:
            raise StepFailed(f"not so within {fmt_duration(within)}: {diff}")
        await asyncio.sleep(0.05)
