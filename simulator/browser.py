"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol with aiohttp's
WebSocket client — no Selenium, no Playwright, no browser download.

``async with Browser.launch(tmp) as b: page = await b.open(url)``; ``page.click(selector)`` sends
real mouse events to the element's centre (so a hidden or covered element cannot be clicked),
``page.wait(js)`` polls an expression under a deadline, ``page.screenshot(path)`` writes a PNG,
and ``page.errors`` collects console errors and uncaught exceptions (each test asserts it empty).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def executable() -> str | None:
    env = os.environ.get("DASHBRIDGE_CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


class CdpError(Exception):
    pass


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._next = 1
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.console: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._waiting.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(CdpError(str(data["error"])))
                    else:
                        fut.set_result(data.get("result", {}))
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                self.console.append(f"{params.get('type')}: {text}")
                if params.get("type") in ("error", "assert"):
                    self.errors.append(f"console.{params.get('type')}: {text}")
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                self.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif method == "Log.entryAdded":
                e = params.get("entry", {})
                if e.get("level") == "error":
                    self.errors.append(f"log: {e.get('text')} {e.get('url', '')}")
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(CdpError("the browser closed the connection"))

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 15.0) -> dict[str, Any]:
        i = self._next
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[i] = fut
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params or {}}))
        async with asyncio.timeout(timeout):
            return await fut

    async def eval(self, expression: str) -> Any:
        r = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                 "awaitPromise": True})
        if "exceptionDetails" in r:
            raise CdpError(f"{expression}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    async def wait(self, expression: str, timeout: float = 15.0, what: str = "", interval: float = 0.05) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = await self.eval(expression)
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {timeout:g}s: {what or expression}")
            await asyncio.sleep(interval)

    async def visible(self, selector: str) -> bool:
        return bool(await self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; const r = e.getBoundingClientRect();"
            " return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden'; })()"))

    async def text(self, selector: str) -> str:
        v = await self.eval(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''")
        return str(v)

    async def click(self, selector: str, timeout: float = 10.0, frame: str | None = None) -> None:
        """Real mouse events at the centre of the element, once it is visible; the element must be
        the one under the pointer (not covered by an overlay).  ``frame``: the selector of a
        same-origin iframe the element is in."""
        sel = json.dumps(selector)
        if frame is None:
            doc, dx, dy = "document", "0", "0"
        else:
            fr = f"document.querySelector({json.dumps(frame)})"
            doc = f"{fr}.contentDocument"
            dx = f"({fr}.getBoundingClientRect().left + {fr}.clientLeft)"
            dy = f"({fr}.getBoundingClientRect().top + {fr}.clientTop)"
        rect = await self.wait(
            f"(() => {{ const d = {doc}; const e = d && d.querySelector({sel}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " if (!r.width || !r.height) return null; const x = r.left + r.width / 2, y = r.top + r.height / 2;"
            " const hit = d.elementFromPoint(x, y);"
            f" return hit && (hit === e || e.contains(hit)) ? {{x: x + {dx}, y: y + {dy}}} : null; }})()",
            timeout, f"{selector} visible and clickable")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", {"type": kind, "x": rect["x"], "y": rect["y"],
                                                         "button": "left", "clickCount": 1})

    async def screenshot(self, path: Path) -> Path:
        r = await self.send("Page.captureScreenshot", {"format": "png"})
        return _write(path, base64.b64decode(r["data"]))

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait("document.readyState === 'complete'", 15.0, "page loaded")

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, session: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.port = port
        self.session = session
        self.pages: list[Page] = []
        self.width, self.height = 1280, 800

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, profile: Path, *, width: int = 1280, height: int = 720) -> AsyncIterator[Browser]:
        exe = executable()
        if exe is None:
            raise FileNotFoundError("no chromium executable (Debian: apt-get install chromium)")
        _mkdir(profile)
        # The browser never sees the test's (private) buses.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
        proc = await asyncio.create_subprocess_exec(
            exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync", "--mute-audio",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            env=env, start_new_session=True)
        session = aiohttp.ClientSession()
        browser: Browser | None = None
        try:
            port_file = profile / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start (exit {proc.returncode})")
                await asyncio.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            browser = cls(proc, port, session)
            browser.width, browser.height = width, height
            yield browser
        finally:
            if browser is not None:
                for p in browser.pages:
                    with contextlib.suppress(Exception):
                        await p.close()
            await session.close()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()

    async def open(self, url: str, *, init_script: str = "") -> Page:
        """A page on ``url``; ``init_script`` runs in it before the page's own scripts."""
        async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as r:
            targets = await r.json()
        target = next(t for t in targets if t.get("type") == "page")
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        page = Page(ws)
        self.pages.append(page)
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            await page.send(domain)
        await page.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                               "deviceScaleFactor": 1, "mobile": False})
        if init_script:
            await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": init_script})
        await page.navigate(url)
        return page
