"""The HMI bridge's WebSocket protocol without a browser (aiohttp's client as the page), against
the real daemon in a World: the snapshot first, then signals ordered by serial; method calls
forwarded with the API's types; malformed messages refused before the bus; D-Bus errors as one
line; a daemon restart announced and followed by a fresh snapshot.  And ``dashbridge-sim up
--hmi`` serves the page on 127.0.0.1 and prints its URL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from dashbridge.daemon.hmi import main as hmi_main
from dashbridge.daemon.hmi.bridge import HmiServer, load_api
from dashbridge.simulator.world import World, WorldSpec

DEADLINE_S = 20.0


class PageSim:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self.n = 0

    async def next(self, pred: Any = lambda m: True, timeout: float = DEADLINE_S) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                m = json.loads((await self.ws.receive()).data)
                self.seen.append(m)
                if pred(m):
                    return m

    async def request(self, **req: Any) -> dict[str, Any]:
        self.n += 1
        await self.ws.send_str(json.dumps({**req, "id": self.n}))
        return await self.next(lambda m: m.get("id") == self.n and m["type"] in ("reply", "error"))


@pytest.fixture
async def rig() -> AsyncIterator[tuple[World, HmiServer]]:
    world = World(WorldSpec(fakes=("bluez", "ofono", "obexd")))
    await world.start()
    assert world.system is not None
    hmi = await HmiServer(world.system.address, port=0).start()
    try:
        yield world, hmi
    finally:
        await hmi.close()
        await world.stop()


@pytest.fixture
async def page(rig: tuple[World, HmiServer]) -> AsyncIterator[PageSim]:
    _, hmi = rig
    async with aiohttp.ClientSession() as s, s.ws_connect(hmi.url + "ws") as ws:
        yield PageSim(ws)


def test_the_api_model_is_read_from_the_shipped_xml() -> None:
    methods, props = load_api()
    assert methods["Phones1.AnswerPrompt"].in_sig == ["u", "b", "s"]
    assert methods["Calls1.Answer"].interface == "org.dashbridge.Calls1"
    assert props["Cloud1.Features"] == "a{s(bss)}"


async def test_snapshot_then_signals_after_its_generation_and_calls_forwarded(
        rig: tuple[World, HmiServer], page: PageSim) -> None:
    assert (await page.next())["type"] == "hello"
    snap = await page.next(lambda m: m["type"] == "snapshot")
    assert {"Daemon1", "Phones1", "Calls1", "Cloud1"} <= set(snap["state"])
    assert snap["state"]["Phones1"]["PairingWindow"] is False
    r = await page.request(type="call", method="Phones1.OpenPairingWindow", args=[30])
    assert r == {"type": "reply", "id": 1, "result": [30]}

    def window_opened(m: dict[str, Any]) -> bool:
        return (m["type"] == "signal" and m["interface"] == "Phones1" and m["member"] == "PropertiesChanged"
                and "PairingWindow" in m["args"][0])

    sig = next((m for m in page.seen if window_opened(m)), None) or await page.next(window_opened)
    assert sig["args"][0]["PairingWindow"] is True
    assert sig["sender"] == snap["sender"] and sig["serial"] > snap["generation"]
    # a property by name (LinkCode is read this way, never broadcast)
    r = await page.request(type="get", property="Phones1.PairingWindow")
    assert r["result"] == [True]
    # a fresh snapshot on request, newer than the signal
    await page.ws.send_str(json.dumps({"type": "resync"}))
    snap2 = await page.next(lambda m: m["type"] == "snapshot")
    assert snap2["generation"] > sig["serial"] and snap2["state"]["Phones1"]["PairingWindow"] is True


@pytest.mark.parametrize(("req", "why"), [
    ({"type": "call", "method": "Phones1.Nope", "args": []}, "no method"),
    ({"type": "call", "method": "org.freedesktop.DBus.ListNames", "args": []}, "no method"),
    ({"type": "call", "method": "Phones1.OpenPairingWindow", "args": ["60"]}, "expected an integer"),
    ({"type": "call", "method": "Phones1.OpenPairingWindow", "args": [-1]}, "out of range"),
    ({"type": "call", "method": "Phones1.OpenPairingWindow", "args": [True]}, "expected an integer"),
    ({"type": "call", "method": "Phones1.OpenPairingWindow", "args": []}, "takes 1 argument"),
    ({"type": "call", "method": "Phones1.AnswerPrompt", "args": [1, "yes", ""]}, "expected true or false"),
    ({"type": "call", "method": "Messages1.List", "args": [{"unread": {"x": 1}}]}, "cannot send a dict"),
    ({"type": "get", "property": "Cloud1.Nope"}, "no readable property"),
    ({"type": "shell", "command": "rm"}, "unknown message type"),
])
async def test_malformed_requests_are_refused_before_the_bus(page: PageSim, req: dict[str, Any], why: str) -> None:
    r = await page.request(**req)
    assert r["type"] == "error" and r["name"] == "BadRequest" and why in r["message"], r
    r = await page.request(type="call", method="Daemon1.Ping", args=[])
    assert r["result"] == ["pong"], "the connection is still usable"


async def test_not_json_and_daemon_errors_are_one_line(page: PageSim) -> None:
    await page.ws.send_str("{not json")
    r = await page.next(lambda m: m["type"] == "error")
    assert r["name"] == "BadRequest" and r["message"] == "not JSON"
    r = await page.request(type="call", method="Phones1.AnswerPrompt", args=[999, True, ""])
    assert r["type"] == "error" and r["name"] == "org.dashbridge.Error.NotFound"
    assert r["message"] and "\n" not in r["message"]
    r = await page.request(type="call", method="Calls1.Dial", args=["not a number", ""])
    assert r["name"] == "org.dashbridge.Error.InvalidArguments"


async def test_a_daemon_restart_is_announced_and_followed_by_a_new_snapshot(
        rig: tuple[World, HmiServer], page: PageSim) -> None:
    world, _ = rig
    first = await page.next(lambda m: m["type"] == "snapshot")
    await world.restart_daemon()
    gone = await page.next(lambda m: m["type"] == "daemon" and not m["available"])
    assert gone["owner"] == ""
    await page.next(lambda m: m["type"] == "daemon" and m["available"])
    again = await page.next(lambda m: m["type"] == "snapshot")
    assert again["sender"] != first["sender"] and "Phones1" in again["state"]


async def test_other_sites_and_other_host_names_are_refused(rig: tuple[World, HmiServer]) -> None:
    """A web page elsewhere must not drive the car through the user's browser: a cross-origin
    WebSocket or POST and a foreign Host (DNS rebinding) get 403; the page's own origin works."""
    _, hmi = rig
    port = hmi.port
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await s.ws_connect(hmi.url + "ws", headers={"Origin": "http://evil.example"})
        assert exc.value.status == 403
        async with s.get(hmi.url, headers={"Host": f"evil.example:{port}"}) as r:
            assert r.status == 403
        async with s.post(hmi.url + "ws", headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403
        async with s.ws_connect(hmi.url + "ws", headers={"Origin": f"http://127.0.0.1:{port}"}) as ws:
            assert json.loads((await ws.receive()).data)["type"] == "hello"
        async with s.get(f"http://localhost:{port}/") as r:
            assert r.status == 200


def test_dashbridge_hmi_serves_only_this_machine_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert HmiServer().host == "127.0.0.1"
    with pytest.raises(SystemExit):
        hmi_main(["--help"])
    assert "127.0.0.1" in capsys.readouterr().out


async def test_sim_up_hmi_prints_the_url_and_serves_the_page() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dashbridge.simulator", "up", "--hmi", "--hmi-port", "0", "--no-daemon",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stderr is not None
    try:
        url = ""
        async with asyncio.timeout(30):
            while not url:
                line = (await proc.stderr.readline()).decode()
                assert line, "up ended before printing the URL"
                m = re.search(r"virtual head unit \(dashbridge-hmi\): (http://127\.0\.0\.1:\d+/)", line)
                url = m.group(1) if m else ""
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                assert r.status == 200 and "virtual head unit" in await r.text()
            async with s.get(url + "static/app.js") as r:
                assert r.status == 200
            async with s.get(url + "static/../bridge.py") as r:
                assert r.status in (403, 404)
            async with s.get(url + "world") as r:
                assert r.status == 200 and "The world (simulator only)" in await r.text()
            async with s.get(url + "world/state") as r:
                assert (await r.json())["fakes"]
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await proc.communicate()
    assert proc.returncode == 0
