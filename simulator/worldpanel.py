"""The world panel: the simulator's side of the virtual head unit, as buttons.

``dashbridge-sim up --hmi`` serves, beside the car's screen (``/``, a client of the public API
only), ``/world``: the car's screen in a frame on the left and, clearly apart on the right, the
world around the car — the phones (in and out of range, pair from the phone, connect, ring the
car, the other party answers or hangs up, send an SMS or e-mail), the backend (offline, online,
migrate), services restarting, simulated time.  These act on the :class:`~.world.World` in this
process, like the shell's verbs; nothing here goes through ``org.dashbridge``.

``GET /world/state`` → JSON of the world; ``POST /world/act`` ``{"action": ..., ...}`` → ``{"ok":
true, "text": ...}`` or ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from .obex_pbap import book_for
from .phone import VirtualPhone
from .world import World, WorldError

ADDRESS_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
LOG_KEEP = 30


class PanelError(Exception):
    pass


class WorldPanel:
    def __init__(self, world: World) -> None:
        self.world = world
        self.log: list[tuple[float, str]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def install(self, app: web.Application) -> None:
        app.router.add_get("/world", self.page)
        app.router.add_get("/world/state", self.state)
        app.router.add_post("/world/act", self.act)
        app.on_cleanup.append(self._cleanup)

    async def _cleanup(self, _app: web.Application) -> None:
        for t in list(self._tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def note(self, text: str) -> None:
        self.log.append((time.time(), text))
        del self.log[:-LOG_KEEP]

    # -- HTTP -------------------------------------------------------------------------------------

    async def page(self, _request: web.Request) -> web.Response:
        html = (resources.files(__package__) / "data" / "worldpanel.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def state(self, _request: web.Request) -> web.Response:
        w = self.world
        phones = []
        for p in w.phones.values():
            try:
                phones.append(w.phone_state(p.address))
            except WorldError:
                phones.append({"name": p.name, "address": p.address})
        backend = None
        b = w.fakes.get("backend")
        if b is not None:
            with contextlib.suppress(Exception):
                backend = {"phase": b.phase, "old": b.old.mode, "new": b.new.mode}
        return web.json_response({
            "phones": phones, "backend": backend, "fakes": sorted(w.fakes), "missing": w.missing,
            "daemon": w.daemon is not None, "clock_offset": w.clock_offset,
            "log": [[round(t, 3), text] for t, text in self.log]})

    async def act(self, request: web.Request) -> web.Response:
        try:
            req = await request.json()
            if not isinstance(req, dict) or not isinstance(req.get("action"), str):
                raise PanelError("expected {\"action\": ...}")
            handler = ACTIONS.get(req["action"])
            if handler is None:
                raise PanelError(f"unknown action {req['action'][:32]!r}")
            text = await handler(self, req)
        except (PanelError, WorldError, ValueError, KeyError, TypeError) as exc:
            self.note(f"error: {exc}")
            return web.json_response({"ok": False, "error": str(exc)})
        self.note(text)
        return web.json_response({"ok": True, "text": text})

    def spawn(self, coro: Awaitable[Any], done: Callable[[Any], str]) -> None:
        async def run() -> None:
            try:
                self.note(done(await coro))
            except (WorldError, ValueError) as exc:
                self.note(f"error: {exc}")

        t = asyncio.ensure_future(run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)


def _s(req: dict[str, Any], key: str, default: str | None = None) -> str:
    v = req.get(key, default)
    if not isinstance(v, str) or (default is None and not v.strip()):
        raise PanelError(f"{key}: expected text")
    return v.strip()


def _phone(panel: WorldPanel, req: dict[str, Any]) -> VirtualPhone:
    return panel.world.phone(_s(req, "phone"))


def _count_or_path(req: dict[str, Any], key: str, default: int, most: int, *, is_file: bool) -> int | str:
    """``key`` as a number of generated items (0..most) or as a path on this machine (the panel
    serves 127.0.0.1 only: the developer's own files, e.g. a real phone's dump), which must exist
    (a file when ``is_file``, else a file or a directory).  A number in a string counts too."""
    v = req.get(key, default)
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    if isinstance(v, bool):
        raise PanelError(f"{key}: a number (0 to {most}) or a path")
    if isinstance(v, int):
        if not 0 <= v <= most:
            raise PanelError(f"{key}: 0 to {most}")
        return v
    if not isinstance(v, str) or not v.strip():
        raise PanelError(f"{key}: a number (0 to {most}) or a path")
    path = Path(v.strip()).expanduser()
    if not (path.is_file() if is_file else path.exists()):
        raise PanelError(f"{key}: {path}: no such {'file' if is_file else 'file or directory'}")
    return str(path.resolve())


async def _add(panel: WorldPanel, req: dict[str, Any]) -> str:
    """A new phone: contacts generated (a number) or from a .vcf; call history generated (calls of
    each kind) or from a .vcf / ich-och-mch directory; messages none or from a YAML/JSON list or a
    directory of bMessages — the fields of :class:`VirtualPhone`, read here so that a bad file is
    refused now, not when the car first pulls the phonebook."""
    address = _s(req, "address").upper()
    if not ADDRESS_RE.match(address):
        raise PanelError(f"{address}: not an address like AA:BB:CC:DD:EE:FF")
    fields: dict[str, Any] = {}
    contacts = _count_or_path(req, "contacts", 20, 5000, is_file=True)
    if isinstance(contacts, int):
        fields["generated_contacts"] = contacts
    else:
        fields["contacts_vcf"] = contacts
    history = _count_or_path(req, "history", 20, 1000, is_file=False)
    if isinstance(history, int):
        fields["pbap_history"] = history
    else:
        fields["history_from"] = history
    messages = req.get("messages", "")
    if not isinstance(messages, str):
        raise PanelError("messages: a path, or empty for none")
    if messages.strip():
        m = _count_or_path(req, "messages", 0, 0, is_file=False)
        if isinstance(m, str):
            fields["messages_from"] = m
    try:
        phone = VirtualPhone(address, name=_s(req, "name"), **fields)
        book = book_for(phone)
    except PanelError:
        raise
    except Exception as exc:  # a file that is not what it should be: refused with its reason
        raise PanelError(f"{address}: could not read the phone's data: {type(exc).__name__}: {exc}") from exc
    await panel.world.add_phone(phone)
    def source(key: str) -> str:
        return f" from {Path(fields[key]).name}" if key in fields else ""

    return (f"{phone.name} ({address}) is in the world, in range, not paired: {len(book.contacts)} contacts"
            f"{source('contacts_vcf')}, {len(book.calls)} calls{source('history_from')}, "
            f"{len(phone.messages)} messages")


async def _range(panel: WorldPanel, req: dict[str, Any]) -> str:
    p = _phone(panel, req)
    inside = bool(req.get("in_range"))
    await panel.world.set_in_range(p.address, inside)
    return f"{p.name} {'comes into' if inside else 'goes out of'} range"


async def _pair(panel: WorldPanel, req: dict[str, Any]) -> str:
    p = _phone(panel, req)
    panel.spawn(panel.world.phone_pair(p.address), lambda outcome: f"{p.name}: pairing ended: {outcome}")
    return f"{p.name} starts pairing with the car (answer the prompt on the car's screen)"


async def _connect(panel: WorldPanel, req: dict[str, Any]) -> str:
    p = _phone(panel, req)
    if req.get("connect", True):
        ok = await panel.world.phone_connect(p.address)
        return f"{p.name} connects to the car: {'connected' if ok else 'refused'}"
    await panel.world.phone_disconnect(p.address)
    return f"{p.name} disconnects from the car"


async def _ring(panel: WorldPanel, req: dict[str, Any]) -> str:
    p = _phone(panel, req)
    panel.world.fake("ofono").incoming_call(p.address, _s(req, "number"), _s(req, "name", ""))
    return f"{p.name} rings ({_s(req, 'number')})"


async def _remote(panel: WorldPanel, req: dict[str, Any]) -> str:
    p = _phone(panel, req)
    what = _s(req, "what")
    acts = {"answer": "remote_answer", "hangup": "remote_hangup"}
    if what not in acts:
        raise PanelError("what: answer or hangup")
    getattr(panel.world.fake("ofono"), acts[what])(p.address)
    return f"the other party on {p.name}: {what}"


async def _message(panel: WorldPanel, req: dict[str, Any]) -> str:
    p = _phone(panel, req)
    kind = _s(req, "type")
    if kind not in ("sms", "email"):
        raise PanelError("type: sms or email")
    panel.world.deliver_message(p.address, "SMS_GSM" if kind == "sms" else "EMAIL", _s(req, "sender"),
                                _s(req, "text"), subject=_s(req, "subject", ""))
    return f"{'a text' if kind == 'sms' else 'an e-mail'} reaches {p.name}"


async def _backend(panel: WorldPanel, req: dict[str, Any]) -> str:
    b = panel.world.fake("backend")
    mode = _s(req, "mode")
    if mode in ("offline", "online", "blackhole"):
        await b.set_listener("old", "up" if mode == "online" else mode)
        return f"the backend's address: {mode}"
    if mode in ("migrating", "migrated"):
        await b.migrate(mode)
        return f"the backend: {mode}"
    raise PanelError("mode: offline, online, blackhole, migrating or migrated")


async def _restart(panel: WorldPanel, req: dict[str, Any]) -> str:
    what = _s(req, "what")
    if what not in World.RESTARTABLE:
        raise PanelError(f"what: one of {', '.join(World.RESTARTABLE)}")
    await panel.world.restart(what)
    return f"{what} restarted"


async def _advance(panel: WorldPanel, req: dict[str, Any]) -> str:
    seconds = req.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 366 * 86400:
        raise PanelError("seconds: more than 0, at most a year")
    await panel.world.advance(float(seconds))
    return f"simulated time: {seconds:g} s further on"


ACTIONS: dict[str, Callable[[WorldPanel, dict[str, Any]], Awaitable[str]]] = {
    "add": _add, "range": _range, "pair": _pair, "connect": _connect, "ring": _ring, "remote": _remote,
    "message": _message, "backend": _backend, "restart": _restart, "advance": _advance,
}
