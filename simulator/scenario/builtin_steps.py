"""Built-in steps: time, the dashboard (public org.dashbridge API), expectations, the daemon process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from dashbridge.daemon.dbus.errors import BusError

from ..world import Event
from .matchers import match
from .registry import Param, Step, StepFailed, action, value_kind
from .runner import Run
from .values import fmt_duration, show


@value_kind("wait", Param("duration", required=True, doc="real time to let pass"),
            "let real time pass (only when the scenario is about time; expectations wait by themselves)")
async def _wait(run: Run, step: Step) -> None:
    await asyncio.sleep(step.params["wait"])


def _signal_pred(run: Run, step: Step, member: str, args: Any) -> Callable[[Event], bool]:
    try:
        m = run.dash.api.resolve(member, "signal")
        iface, name = m.interface, m.name
    except KeyError:
        # PropertiesChanged of an org.dashbridge interface: "Phones1.PropertiesChanged"
        iface, _, name = member.rpartition(".")
        if name != "PropertiesChanged":
            raise
        iface = iface if iface.startswith("org.") else "org.dashbridge." + iface
    want = run.subst(args) if args is not None else None

    def pred(ev: Event) -> bool:
        if ev.interface != iface or ev.member != name:
            return False
        return want is None or match(want, ev.named) is None

    return pred


def _explain_signal(run: Run, member: str, args: Any, since: int) -> str:
    """Why nothing matched: the closest signals of that name, with the mismatch."""
    want = run.subst(args) if args is not None else None
    short = member.rsplit(".", 1)[-1]
    near = [ev for ev in run.dash.events[since:] if ev.member == short]
    lines = []
    for ev in near[-3:]:
        why = match(want, ev.named) if want is not None else None
        lines.append(f"    {ev.describe()}\n      differs: {why}" if why else f"    {ev.describe()}")
    seen = "\n".join(lines) if lines else "    (none of that name)"
    return f"  {short} signals seen:\n{seen}\n  all signals since the step before:\n{run.events_since(since)}"


@value_kind("expect_signal", Param("signal", required=True, doc="Interface.Signal, e.g. Phones1.PairingFinished"),
            "the dashboard receives this signal (since the last action step) within the deadline",
            args=Param("matcher", doc="what its arguments must match (by name, see docs/api/)"),
            within=Param("duration", doc="deadline (default: defaults.within)"),
            count=Param("int", default=1, doc="at least this many matching signals"),
            since=Param("str", default="step", choices=("step", "start"),
                        doc="look from the last action step (default) or from the scenario's start"),
            after=Param("name", doc="only after the signal saved under this name (ordering)"),
            save=Param("name", doc="keep the (last) matching signal's arguments under this name"))
async def _expect_signal(run: Run, step: Step) -> None:
    p = step.params
    within = run.within(step)
    since = 0 if p["since"] == "start" else run.mark
    if p["after"] is not None:
        if p["after"] not in run.saved_seq:
            raise StepFailed(f"after: no signal was saved as {p['after']}")
        since = run.saved_seq[p["after"]] + 1
    try:
        pred = _signal_pred(run, step, p["expect_signal"], p["args"])
    except KeyError as exc:
        raise StepFailed(str(exc.args[0])) from None
    found: list[Event] = []
    pos = since
    try:
        async with asyncio.timeout(within):
            while len(found) < p["count"]:
                ev = await run.dash.wait_for(pred, within + 1, since=pos)
                found.append(ev)
                pos = ev.seq + 1
    except TimeoutError:
        got = f" (saw {len(found)} of {p['count']})" if p["count"] > 1 else ""
        raise StepFailed(f"not seen within {fmt_duration(within)}{got}\n"
                         + _explain_signal(run, p["expect_signal"], p["args"], since)) from None
    run.satisfied_at = found[-1].at  # the report's timing: when the signal came
    if p["save"]:
        run.saved[p["save"]] = found[-1].named
        run.saved_seq[p["save"]] = found[-1].seq


@value_kind("expect_no_signal", Param("signal", required=True, doc="Interface.Signal"),
            "the dashboard does NOT receive this signal during the given time (absence takes time to show)",
            args=Param("matcher", doc="only signals whose arguments match count"),
            during=Param("duration", required=True, doc="how long to watch (real time)"),
            since=Param("str", default="step", choices=("step", "start")))
async def _expect_no_signal(run: Run, step: Step) -> None:
    p = step.params
    since = 0 if p["since"] == "start" else run.mark
    try:
        pred = _signal_pred(run, step, p["expect_no_signal"], p["args"])
    except KeyError as exc:
        raise StepFailed(str(exc.args[0])) from None
    try:
        ev = await run.dash.wait_for(pred, p["during"], since=since)
    except TimeoutError:
        return
    raise StepFailed(f"it came: {ev.describe()}\n  all signals since the step before:\n{run.events_since(since)}")


@value_kind("expect_property", Param("property", required=True, doc="Interface.Property, e.g. Daemon1.Health"),
            "a property of org.dashbridge matches within the deadline (re-read whenever the daemon signals)",
            value=Param("matcher", required=True, doc="what the property's value must match"),
            within=Param("duration", doc="deadline (default: defaults.within)"),
            save=Param("name", doc="keep the value under this name"))
async def _expect_property(run: Run, step: Step) -> None:
    p = step.params
    within = run.within(step)
    try:
        run.dash.api.resolve(p["expect_property"], "property")
    except KeyError as exc:
        raise StepFailed(str(exc.args[0])) from None
    want = run.subst(p["value"])
    last: Any = None
    why: str | None = "never read"
    try:
        async with asyncio.timeout(within):
            while True:
                # Wait for the next signal *before* reading, so a change between the read and
                # the wait is not missed (any daemon signal may come with a property change).
                nxt = asyncio.ensure_future(run.dash.changed())
                try:
                    last = await run.dash.get(p["expect_property"], timeout=within)
                    why = match(want, last)
                    if why is None:
                        break
                    await nxt
                finally:
                    nxt.cancel()
    except TimeoutError:
        raise StepFailed(f"not so within {fmt_duration(within)}: {why}\n  last value: {show(last)}") from None
    if p["save"]:
        run.saved[p["save"]] = last


@action("dashboard", "call", "call any documented org.dashbridge method (Interface.Method) with arguments",
        method=Param("method", required=True, doc="Interface.Method, e.g. Phones1.OpenPairingWindow"),
        args=Param("list", default=[], doc="the arguments, in order (see docs/api/)"),
        expect_error=Param("str", doc="the call must fail with this error (e.g. NotReady)"),
        result=Param("matcher", doc="what the reply must match"),
        save=Param("name", doc="keep the reply under this name"))
async def _dashboard_call(run: Run, step: Step) -> None:
    p = step.params
    await dashboard_call(run, p["method"], run.subst(p["args"]), expect_error=p["expect_error"],
                         result=p["result"], save=p["save"])


async def dashboard_call(run: Run, method: str, args: Sequence[Any], *, expect_error: str | None = None,
                         result: Any = None, save: str | None = None) -> Any:
    try:
        reply = await run.dash.call(method, list(args))
    except KeyError as exc:
        raise StepFailed(str(exc.args[0])) from None
    except BusError as exc:
        if expect_error and (exc.name == expect_error or exc.name.endswith("." + expect_error)):
            if save:
                run.saved[save] = {"error": exc.name, "message": exc.text}
            return None
        raise StepFailed(f"the daemon answered {exc.name}: {exc.text}") from None
    if expect_error:
        raise StepFailed(f"expected the error {expect_error}, but the call succeeded: {show(reply)}")
    if result is not None:
        why = match(run.subst(result), reply)
        if why:
            raise StepFailed(f"reply does not match: {why}")
    if save:
        run.saved[save] = reply
    return reply


@action("daemon", "restart", "stop the daemon (SIGTERM) and start it again on the same state")
async def _daemon_restart(run: Run, step: Step) -> None:
    await run.w.restart_daemon()


@action("daemon", "kill", "SIGKILL the daemon (power loss) and start it again on the same state")
async def _daemon_kill(run: Run, step: Step) -> None:
    await run.w.restart_daemon(kill=True)


@action("daemon", "stop", "stop the daemon (SIGTERM)")
async def _daemon_stop(run: Run, step: Step) -> None:
    await run.w.stop_daemon()


@action("daemon", "start", "start the daemon (after stop) on the same state")
async def _daemon_start(run: Run, step: Step) -> None:
    await run.w.start_daemon()
