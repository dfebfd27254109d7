"""The HMI bridge: one D-Bus connection to ``org.dashbridge`` as a dashboard client, JSON over a
WebSocket to the page.

A client of the public API only (like ``dashbridgectl``): it imports the bus layer and the API's
introspection XML, never a component.  It checks nothing the daemon does not: the daemon's own
caller gate (``api.allowed_groups``/``allowed_users``, the D-Bus policy) applies to this process's
connection, so the HMI process must run as a user in the ``dashboard`` group.  The bridge only
validates the *shape* of what the page sends (a method that the API's XML declares, arguments of
the declared types) so a malformed message never reaches the bus.

Protocol (one JSON object per WebSocket text frame):

page → bridge
  ``{"type": "call", "id": N, "method": "Calls1.Answer", "args": ["call3"]}``
  ``{"type": "get", "id": N, "property": "Cloud1.LinkCode"}``
  ``{"type": "resync"}`` — a fresh snapshot

bridge → page
  ``{"type": "hello", "version": 1}``
  ``{"type": "snapshot", "generation": G, "sender": ":1.42", "state": {...}}`` (Daemon1.GetSnapshot)
  ``{"type": "signal", "interface": "Calls1", "member": "CallAdded", "args": [...], "serial": S,
  "sender": ":1.42"}``
  ``{"type": "daemon", "available": false}`` — org.dashbridge left the bus (a snapshot follows when
  it is back)
  ``{"type": "reply", "id": N, "result": [...]}`` / ``{"type": "error", "id": N, "name": ..., "message": ...}``

The page applies a signal only if its ``sender`` is the snapshot's and its ``serial`` is greater
than the snapshot's ``generation`` (docs/dbus-api.md, "Starting up and resynchronising").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.signature import SignatureTree, SignatureType

from ..dbus import names
from ..dbus.bus import connect
from ..dbus.call import call, unwrap
from ..dbus.errors import BusError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
PREFIX = "org.dashbridge."
CALL_TIMEOUT_S = 15.0
MAX_FRAME = 64 * 1024  # bytes of one message from the page
STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})  # the names the page answers to by default


class BadRequest(ValueError):
    """A message from the page that does not fit the API: never sent to the bus."""


@dataclass(frozen=True)
class Method:
    interface: str
    name: str
    in_sig: list[str]


def load_api() -> tuple[dict[str, Method], dict[str, str]]:
    """Methods (``Short1.Member`` → Method) and readable properties (``Short1.Prop`` → type) from
    the API's introspection XML shipped with the daemon."""
    methods: dict[str, Method] = {}
    props: dict[str, str] = {}
    xml_dir = resources.files("dashbridge.daemon") / "api" / "xml"
    for entry in sorted(xml_dir.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".xml"):
            continue
        root = ET.fromstring(entry.read_text())
        for iface in root.iter("interface"):
            iname = iface.get("name", "")
            if not iname.startswith(PREFIX):
                continue
            short = iname.removeprefix(PREFIX)
            for m in iface.iter("method"):
                sig = [a.get("type", "") for a in m.iter("arg") if a.get("direction", "in") == "in"]
                methods[f"{short}.{m.get('name')}"] = Method(iname, m.get("name", ""), sig)
            for p in iface.iter("property"):
                if "read" in p.get("access", ""):
                    props[f"{short}.{p.get('name')}"] = p.get("type", "")
    return methods, props


def to_dbus(value: Any, sig: str | SignatureType) -> Any:
    """A JSON value as the D-Bus type ``sig``; :class:`BadRequest` if it does not fit."""
    t = sig if isinstance(sig, SignatureType) else SignatureTree(sig).types[0]
    c = t.token
    if c == "s" or c == "o" or c == "g":
        if not isinstance(value, str):
            raise BadRequest(f"expected a string, got {type(value).__name__}")
        return value
    if c == "b":
        if not isinstance(value, bool):
            raise BadRequest(f"expected true or false, got {type(value).__name__}")
        return value
    if c in "ynqiuxt":
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"expected an integer, got {type(value).__name__}")
        lo, hi = {"y": (0, 255), "n": (-(2**15), 2**15 - 1), "q": (0, 2**16 - 1), "i": (-(2**31), 2**31 - 1),
                  "u": (0, 2**32 - 1), "x": (-(2**63), 2**63 - 1), "t": (0, 2**64 - 1)}[c]
        if not lo <= value <= hi:
            raise BadRequest(f"{value} is out of range for D-Bus type {c}")
        return value
    if c == "d":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"expected a number, got {type(value).__name__}")
        return float(value)
    if c == "v":
        return Variant(_guess(value), to_dbus(value, _guess(value)))
    if c == "a":
        child = t.children[0]
        if child.token == "{":
            if not isinstance(value, dict):
                raise BadRequest("expected an object")
            kt, vt = child.children
            return {to_dbus(k, kt): to_dbus(v, vt) for k, v in value.items()}
        if not isinstance(value, list):
            raise BadRequest("expected a list")
        return [to_dbus(v, child) for v in value]
    if c == "(":
        if not isinstance(value, list) or len(value) != len(t.children):
            raise BadRequest(f"expected a list of {len(t.children)} values")
        return [to_dbus(v, ct) for v, ct in zip(value, t.children, strict=True)]
    raise BadRequest(f"D-Bus type {t.signature} is not supported")


def _guess(value: Any) -> str:
    """The D-Bus type of a JSON value inside a variant (filters: ``unread`` b, ``limit`` u ...)."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "u" if 0 <= value < 2**32 else "x"
    if isinstance(value, float):
        return "d"
    if isinstance(value, str):
        return "s"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "as"
    raise BadRequest(f"cannot send a {type(value).__name__} in a variant")


def plain(value: Any) -> Any:
    """D-Bus values as JSON: variants unwrapped, tuples as lists, bytes (``ay``: a contact's photo)
    as base64."""
    v = unwrap(value)
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    if isinstance(v, bytes | bytearray):
        return base64.b64encode(v).decode("ascii")
    return v


class Client:
    """One page: its WebSocket and the order of what it is sent."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=10_000)

    def send(self, obj: dict[str, Any] | None) -> None:
        """Queue ``obj`` for the page (None: close it)."""
        try:
            self.queue.put_nowait(obj)
        except asyncio.QueueFull:  # a page that stopped reading: close it; it resyncs when it reconnects
            log.warning("a page is not reading; closing it")
            self.queue = asyncio.Queue(maxsize=1)
            self.queue.put_nowait(None)

    async def pump(self) -> None:
        while True:
            obj = await self.queue.get()
            if obj is None:
                await self.ws.close()
                return
            await self.ws.send_str(json.dumps(obj, default=str, ensure_ascii=False))


class Bridge:
    """Holds the D-Bus connection and every connected page."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.bus: MessageBus | None = None
        self.clients: set[Client] = set()
        self.methods, self.props = load_api()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- D-Bus ------------------------------------------------------------------------------------

    async def start(self) -> Bridge:
        self.bus = await connect(self.address, "system")
        self.bus.add_message_handler(self._on_message)
        for rule in (f"type='signal',sender='{names.DASHBRIDGE_NAME}'",
                     f"type='signal',sender='{names.DBUS_NAME}',member='NameOwnerChanged',"
                     f"arg0='{names.DASHBRIDGE_NAME}'"):
            await call(self.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s", [rule])
        return self

    async def close(self) -> None:
        for c in list(self.clients):
            c.send(None)
        for t in list(self._tasks):
            t.cancel()
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged" and msg.sender == names.DBUS_NAME:
            name, _old, new = msg.body
            if name != names.DASHBRIDGE_NAME:
                return
            for c in list(self.clients):
                c.send({"type": "daemon", "available": bool(new), "owner": new})
                if new:
                    self._spawn(self.snapshot(c))
            return
        iface = msg.interface or ""
        if iface == names.PROPERTIES_IFACE and msg.body and str(msg.body[0]).startswith(PREFIX):
            out = {"type": "signal", "interface": str(msg.body[0]).removeprefix(PREFIX), "member": "PropertiesChanged",
                   "args": plain(list(msg.body[1:])), "serial": msg.serial, "sender": msg.sender}
        elif iface.startswith(PREFIX):
            out = {"type": "signal", "interface": iface.removeprefix(PREFIX), "member": msg.member,
                   "args": plain(list(msg.body)), "serial": msg.serial, "sender": msg.sender}
        else:
            return
        for c in list(self.clients):
            c.send(out)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def snapshot(self, client: Client) -> None:
        assert self.bus is not None
        msg = Message(destination=names.DASHBRIDGE_NAME, path=names.DASHBRIDGE_PATH,
                      interface=names.DASHBRIDGE_DAEMON_IFACE, member="GetSnapshot")
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                reply = await self.bus.call(msg)
        except (TimeoutError, EOFError, ConnectionError) as exc:
            client.send({"type": "daemon", "available": False, "reason": str(exc) or "no answer"})
            return
        if reply is None or reply.message_type == MessageType.ERROR:
            name = reply.error_name if reply is not None else "Disconnected"
            client.send({"type": "daemon", "available": False, "reason": name})
            return
        generation, state = reply.body
        client.send({"type": "snapshot", "generation": generation, "sender": reply.sender,
                     "state": plain(state)})

    # -- the page's requests ----------------------------------------------------------------------

    async def handle(self, client: Client, data: str) -> None:
        rid: Any = None
        try:
            if len(data) > MAX_FRAME:
                raise BadRequest("message too long")
            try:
                req = json.loads(data)
            except ValueError:
                raise BadRequest("not JSON") from None
            if not isinstance(req, dict):
                raise BadRequest("expected a JSON object")
            rid = req.get("id")
            if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int | str)):
                raise BadRequest("id must be a number or a string")
            kind = req.get("type")
            if kind == "resync":
                await self.snapshot(client)
                return
            if kind == "call":
                result = await self._call(req)
            elif kind == "get":
                result = await self._get(req)
            else:
                raise BadRequest(f"unknown message type {str(kind)[:32]!r}")
            client.send({"type": "reply", "id": rid, "result": plain(result)})
        except BadRequest as exc:
            client.send({"type": "error", "id": rid, "name": "BadRequest", "message": str(exc)})
        except BusError as exc:
            client.send({"type": "error", "id": rid, "name": exc.name, "message": _describe(exc)})

    async def _call(self, req: dict[str, Any]) -> list[Any]:
        method = req.get("method")
        args = req.get("args", [])
        m = self.methods.get(method) if isinstance(method, str) else None
        if m is None:
            raise BadRequest(f"no method {str(method)[:64]!r} in the org.dashbridge API")
        if not isinstance(args, list) or len(args) != len(m.in_sig):
            raise BadRequest(f"{method} takes {len(m.in_sig)} argument(s)")
        try:
            body = [to_dbus(a, s) for a, s in zip(args, m.in_sig, strict=True)]
        except BadRequest as exc:
            raise BadRequest(f"{method}: {exc}") from None
        assert self.bus is not None
        return await call(self.bus, names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH, m.interface, m.name,
                          "".join(m.in_sig), body, timeout=CALL_TIMEOUT_S)

    async def _get(self, req: dict[str, Any]) -> list[Any]:
        prop = req.get("property")
        if not isinstance(prop, str) or prop not in self.props:
            raise BadRequest(f"no readable property {str(prop)[:64]!r} in the org.dashbridge API")
        iface, name = prop.split(".", 1)
        assert self.bus is not None
        return await call(self.bus, names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH, names.PROPERTIES_IFACE, "Get",
                          "ss", [PREFIX + iface, name], timeout=CALL_TIMEOUT_S)

    # -- HTTP ---------------------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_FRAME * 2)
        await ws.prepare(request)
        client = Client(ws)
        pump = asyncio.ensure_future(client.pump())
        client.send({"type": "hello", "version": PROTOCOL_VERSION})
        self.clients.add(client)  # signals are queued from now on, the snapshot orders them
        try:
            await self.snapshot(client)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._spawn(self.handle(client, msg.data))
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self.clients.discard(client)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        return ws

    def app(self, hosts: frozenset[str] | None = LOOPBACK) -> web.Application:
        """The page, its files and the WebSocket.  ``hosts``: the host names the page may be asked
        for (None: any, when served on purpose beyond this machine)."""
        app = web.Application(client_max_size=MAX_FRAME, middlewares=[same_origin(hosts)])
        app.router.add_get("/ws", self.websocket)

        async def index(_request: web.Request) -> web.FileResponse:
            return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

        app.router.add_get("/", index)
        app.router.add_static("/static/", STATIC)
        return app


def same_origin(hosts: frozenset[str] | None) -> Any:
    """Refuse what a web page from elsewhere could make a browser send here: a request whose
    ``Origin`` is not this server (another site opening the WebSocket or posting to it — WebSockets
    have no CORS), and one whose ``Host`` is not a name of this machine (DNS rebinding).  This
    guards the transport, not the API: what the page may do is still only what the daemon allows."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        hostname = urlsplit("//" + request.host).hostname or ""
        if hosts is not None and hostname not in hosts:
            raise web.HTTPForbidden(text="dashbridge-hmi: unknown Host\n")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="dashbridge-hmi: cross-origin request refused\n")
        response: web.StreamResponse = await handler(request)
        return response

    return guard


def _describe(exc: BusError) -> str:
    if exc.name in (names.ERR_SERVICE_UNKNOWN, names.ERR_NAME_HAS_NO_OWNER):
        return "the dashbridge daemon is not running"
    return exc.text or exc.name.rsplit(".", 1)[-1]


class HmiServer:
    """The bridge and its HTTP server on ``host:port`` (port 0: any free port)."""

    def __init__(self, address: str | None = None, host: str = "127.0.0.1", port: int = 8765,
                 extra: Callable[[web.Application], None] | None = None) -> None:
        self.bridge = Bridge(address)
        self.host = host
        self.port = port
        self.extra = extra  # more routes on the same server (the simulator's world panel)
        self._runner: web.AppRunner | None = None

    async def start(self) -> HmiServer:
        await self.bridge.start()
        loopback = self.host in LOOPBACK or self.host.startswith("127.")
        app = self.bridge.app(LOOPBACK | {self.host} if loopback else None)
        if self.extra is not None:
            self.extra(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def close(self) -> None:
        await self.bridge.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
