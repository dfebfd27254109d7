"""One fake D-Bus object server for the simulator's fake services (bluetoothd, obexd, ofonod).

A :class:`ObjectServer` sits on one ``MessageBus`` connection (the service's own: a simulated
restart is a new connection and a new server) and serves the objects registered in it, each a path
with :class:`FakeInterface` instances.  It does what gdbus does for BlueZ and obexd, and what oFono's
own conventions are for oFono:

* method dispatch from each interface's table (``method(name, in_sig, out_sig, handler)``); a
  handler gets a :class:`Call` and the message's arguments and returns the reply body (a list, or
  ``None`` for an empty one), an awaitable of it (the reply is sent when it resolves), or
  :data:`DEFERRED` when it replies later itself (``call.reply()`` / ``call.error()``; a handler may
  also reply at once with ``call.reply()`` and go on emitting signals, as oFono does).  A
  :class:`FakeError` is an error reply; a wrong signature is ``UnknownMethod`` (libdbus skipping a
  gdbus method) unless the server is given ``bad_args_error``;
* ``org.freedesktop.DBus.Properties`` ``Get``/``GetAll``/``Set`` with the standard errors
  (``InvalidArgs`` for an unknown interface or property, ``PropertyReadOnly``);
* ``org.freedesktop.DBus.ObjectManager`` at ``object_manager`` (``/``), and gdbus-style batching:
  interface additions, removals and property changes are emitted from an idle callback once per
  loop iteration; several changes to one interface make ONE ``PropertiesChanged`` with the current
  values (absent ones ``invalidated``); changes to an interface not yet announced fold into its
  ``InterfacesAdded``; add + remove within one iteration emits nothing; pending changes go out
  before ``InterfacesRemoved``;
* ``object_manager=None, ofono=True``: oFono's way instead — no ObjectManager, interfaces answer
  ``GetProperties`` (and ``SetProperty`` where settable), and a change is one
  ``PropertyChanged(sv)`` per property sent at once; ``Properties.GetAll`` answers ``{}``;
* introspection of every path (children included) generated from the tables, argument lists split
  with dbus-fast's :class:`~dbus_fast.signature.SignatureTree`;
* ``NameOwnerChanged`` watching (``await server.watch_clients()``): ``on_name_lost(unique_name)``
  when a client leaves the bus.

Names are the simulator's own (:mod:`simulator.names`), never the daemon's.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import xml.sax.saxutils
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.signature import SignatureTree

from . import names

log = logging.getLogger(__name__)


class FakeError(Exception):
    """Raised by a handler: becomes the D-Bus error reply ``name`` (``prefix`` + a short name)."""

    prefix = ""

    def __init__(self, name: str, text: str = "") -> None:
        self.name = name if "." in name else self.prefix + name
        self.text = text
        super().__init__(f"{self.name}: {text}")


class _Deferred:
    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED: Final = _Deferred()  # a handler's result: "I reply later myself"


@dataclass
class Call:
    """One method call being served: who called, and the way to reply out of band."""

    sender: str
    owner: Any  # the fake that owns the server (FakeObexd, FakeBluez, FakeOfono)
    message: Message
    server: ObjectServer | None = field(default=None, repr=False)
    replied: bool = False

    def reply(self, signature: str = "", body: list[Any] | None = None) -> None:
        if not self.replied and self.server is not None:
            self.replied = True
            self.server.send(Message.new_method_return(self.message, signature, body or []))

    def error(self, name: str, text: str = "") -> None:
        if not self.replied and self.server is not None:
            self.replied = True
            self.server.send(Message.new_error(self.message, name, text))


Handler = Callable[..., Any]  # handler(call, *args) -> list | None | Awaitable | DEFERRED


@dataclass(frozen=True)
class Method:
    in_sig: str
    out_sig: str
    handler: Handler


def split_signature(sig: str) -> list[str]:
    """The complete types of a signature, e.g. ``"oa{sv}as"`` -> ``["o", "a{sv}", "as"]``."""
    return [t.signature for t in SignatureTree(sig).types] if sig else []


class FakeInterface:
    """One D-Bus interface of a fake object: a method table, signals, and the properties that
    exist now (override :meth:`properties`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.methods: dict[str, Method] = {}
        self.signals: dict[str, str] = {}
        self._server: ObjectServer | None = None
        self._path: str | None = None

    def method(self, name: str, in_sig: str, out_sig: str, handler: Handler) -> None:
        self.methods[name] = Method(in_sig, out_sig, handler)

    def properties(self) -> dict[str, Variant]:
        """Current values of the properties that exist (gdbus "exists" callbacks)."""
        return {}

    def property_signatures(self) -> dict[str, str]:
        """Every property this interface may have, for introspection and ``Set``."""
        return {k: v.signature for k, v in self.properties().items()}

    def writable(self) -> set[str]:
        return set()

    def set_property(self, call: Call, name: str, value: Variant) -> Awaitable[Any] | None:
        raise FakeError(names.E_READ_ONLY, f"Property '{name}' is not writable")

    def call_done(self, call: Call, started: float, outcome: str) -> None:
        """Called when a method call of this interface was answered (``ok`` or the error)."""

    def changed(self, *props: str) -> None:
        """Mark properties changed (a coalesced PropertiesChanged, or oFono's PropertyChanged)."""
        if self._server is not None and self._path is not None:
            self._server.changed(self._path, self.name, props)

    # oFono's property methods, for a server with ofono=True
    def ofono_properties(self, *, settable: bool = False) -> None:
        self.method("GetProperties", "", "a{sv}", lambda call: [self.properties()])
        if settable:
            self.method("SetProperty", "sv", "", lambda call, name, value: self.set_property(call, name, value))
        self.signals["PropertyChanged"] = "sv"


class DictInterface(FakeInterface):
    """Properties kept as plain values in a dict (``None`` = absent) with a signature table; the
    dict may be shared with the fake's own state.  ``setter(name, value)`` serves a ``Set`` of a
    writable property (it may return an awaitable: the reply waits for it)."""

    def __init__(self, name: str, sigs: dict[str, str], values: dict[str, Any] | None = None, *,
                 writable: Iterable[str] = (),
                 setter: Callable[[str, Any], Awaitable[Any] | None] | None = None) -> None:
        super().__init__(name)
        self.sigs = sigs
        self.values: dict[str, Any] = values if values is not None else {}
        self._writable = set(writable)
        self._setter = setter

    def properties(self) -> dict[str, Variant]:
        return {k: Variant(self.sigs[k], v) for k, v in self.values.items() if v is not None}

    def property_signatures(self) -> dict[str, str]:
        return dict(self.sigs)

    def writable(self) -> set[str]:
        return set(self._writable)

    def set_property(self, call: Call, name: str, value: Variant) -> Awaitable[Any] | None:
        if name not in self._writable or self._setter is None:
            raise FakeError(names.E_READ_ONLY, f"Property '{name}' is not writable")
        if value.signature != self.sigs[name]:
            raise FakeError(names.E_INVALID_ARGS, f"Invalid argument type: '{value.signature}'")
        return self._setter(name, value.value)

    def update(self, **props: Any) -> None:
        """Set values; the ones that differ are announced."""
        diff = [k for k, v in props.items() if self.values.get(k) != v]
        for k in diff:
            self.values[k] = props[k]
        if diff:
            self.changed(*diff)


class ObjectServer:
    """The objects one fake service serves on its connection (see the module docstring)."""

    def __init__(self, bus: MessageBus, *, owner: Any = None, object_manager: str | None = "/",
                 ofono: bool = False, error_prefix: str = "", bad_args_error: tuple[str, str] | None = None,
                 arg_errors: tuple[type[Exception], ...] = (), sync_removal: bool = False,
                 before_call: Callable[[Message], Message | bool | None] | None = None) -> None:
        self.bus = bus
        self.owner = owner
        self.object_manager = object_manager
        self.ofono = ofono
        self.error_prefix = error_prefix  # for "Failed" when a handler has a bug
        self.bad_args_error = bad_args_error
        self.arg_errors = arg_errors
        self.sync_removal = sync_removal  # remove(): flush everything, then InterfacesRemoved at once
        self.before_call = before_call
        self.on_name_lost: Callable[[str], None] | None = None
        self.objects: dict[str, dict[str, FakeInterface]] = {}
        self.hidden: set[str] = set()  # exported but not managed (control objects)
        self.closed = False
        self._order: list[tuple[str, str, str]] = []  # (kind, path, iface), kind: add | chg | rm
        self._adding: set[tuple[str, str]] = set()
        self._changed: dict[tuple[str, str], set[str]] = {}
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        bus.add_message_handler(self._on_message)

    async def watch_clients(self, timeout: float = 5.0) -> None:
        """Receive NameOwnerChanged, so ``on_name_lost`` hears of clients leaving."""
        msg = Message(destination=names.DBUS_NAME, path=names.DBUS_PATH, interface=names.DBUS_NAME,
                      member="AddMatch", signature="s",
                      body=[f"type='signal',sender='{names.DBUS_NAME}',member='NameOwnerChanged'"])
        async with asyncio.timeout(timeout):
            reply = await self.bus.call(msg)
        if reply is None or reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"AddMatch failed: {reply.body if reply else 'no reply'}")

    # -- registry --------------------------------------------------------------------------------
    def add(self, path: str, *ifaces: FakeInterface, hidden: bool = False, announce: bool = True) -> None:
        """Register interfaces at ``path`` (announced at the next idle unless ``hidden`` — not
        managed at all — or ``announce=False`` — managed, but there before anyone looked)."""
        obj = self.objects.setdefault(path, {})
        for iface in ifaces:
            obj[iface.name] = iface
            iface._server, iface._path = self, path
        if hidden:
            self.hidden.add(path)
            return
        if not announce or self.object_manager is None:
            return
        for iface in ifaces:
            self._adding.add((path, iface.name))
            self._order.append(("add", path, iface.name))
        self._schedule()

    def remove(self, path: str, *iface_names: str) -> None:
        """Unregister interfaces of ``path`` (all of them by default; the object goes with its last)."""
        obj = self.objects.get(path)
        if obj is None:
            return
        gone = [n for n in (iface_names or list(obj)) if n in obj]
        managed = path not in self.hidden and self.object_manager is not None
        announced = []
        for n in gone:
            if (path, n) in self._adding:
                self._adding.discard((path, n))  # added and removed within one iteration: no signal at all
                self._changed.pop((path, n), None)
            else:
                announced.append(n)
        if managed and announced:
            if self.sync_removal:
                self.flush()  # everything pending (this object's changes included) goes out first
            else:
                for n in announced:
                    pending = self._changed.pop((path, n), None)
                    if pending:
                        self._emit_changed(path, n, pending)  # pending changes go out before the removal
        for n in gone:
            obj.pop(n)._server = None
        if not obj:
            del self.objects[path]
            self.hidden.discard(path)
        if not (managed and announced):
            return
        if self.sync_removal:
            self.send(Message.new_signal(self.object_manager or "/", names.OBJECT_MANAGER, "InterfacesRemoved",
                                         "oas", [path, announced]))
            return
        for n in announced:
            self._order.append(("rm", path, n))
        self._schedule()

    def changed(self, path: str, iface: str, props: Iterable[str]) -> None:
        if path in self.hidden:
            return
        if self.ofono:
            current = self.get(path, iface)
            values = current.properties() if current is not None else {}
            for p in props:
                if p in values:
                    self.send(Message.new_signal(path, iface, "PropertyChanged", "sv", [p, values[p]]))
            return
        if self.object_manager is not None and (path, iface) in self._adding:
            return  # folded into InterfacesAdded (current values are read at flush time)
        key = (path, iface)
        if key not in self._changed:
            self._changed[key] = set()
            self._order.append(("chg", path, iface))
        self._changed[key].update(props)
        self._schedule()

    def get(self, path: str, iface: str) -> FakeInterface | None:
        return self.objects.get(path, {}).get(iface)

    def children(self, prefix: str) -> list[str]:
        return [p for p in self.objects if p.startswith(prefix + "/")]

    def clear(self) -> None:
        """The service goes away: every object, pending signal and pending reply is dropped."""
        for obj in self.objects.values():
            for iface in obj.values():
                iface._server = None
        self.objects.clear()
        self.hidden.clear()
        self._order, self._adding, self._changed, self._scheduled = [], set(), {}, False
        self.closed = True
        for t in list(self._tasks):
            t.cancel()

    # -- signals ---------------------------------------------------------------------------------
    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        order, self._order = self._order, []
        adding, self._adding = self._adding, set()
        changed, self._changed = self._changed, {}
        root = self.object_manager or "/"
        done_add: set[str] = set()
        i = 0
        while i < len(order):
            kind, path, iface = order[i]
            if kind == "add" and (path, iface) in adding and path not in done_add:
                ifaces = [f for (k, p, f) in order if k == "add" and p == path and (p, f) in adding]
                done_add.add(path)
                obj = self.objects.get(path)
                if obj is not None:
                    body = {f: obj[f].properties() for f in ifaces if f in obj}
                    if body:
                        self.send(Message.new_signal(root, names.OBJECT_MANAGER, "InterfacesAdded", "oa{sa{sv}}",
                                                     [path, body]))
            elif kind == "chg" and (path, iface) in changed:
                self._emit_changed(path, iface, changed.pop((path, iface)))
            elif kind == "rm":
                ifaces = [iface]
                while i + 1 < len(order) and order[i + 1][0] == "rm" and order[i + 1][1] == path:
                    i += 1
                    ifaces.append(order[i][2])
                self.send(Message.new_signal(root, names.OBJECT_MANAGER, "InterfacesRemoved", "oas", [path, ifaces]))
            i += 1

    def _emit_changed(self, path: str, name: str, props: set[str]) -> None:
        iface = self.get(path, name)
        if iface is None:
            return
        current = iface.properties()
        changed = {k: current[k] for k in sorted(props) if k in current}
        invalidated = sorted(k for k in props if k not in current)
        if changed or invalidated:
            self.send(Message.new_signal(path, names.PROPERTIES, "PropertiesChanged", "sa{sv}as",
                                         [name, changed, invalidated]))

    def emit(self, path: str, iface: str, member: str, signature: str, body: list[Any], *,
             flush: bool = True) -> None:
        """A signal now (after the pending batched ones unless ``flush=False``)."""
        if flush and self._scheduled:
            self.flush()
        self.send(Message.new_signal(path, iface, member, signature, body))

    def send(self, msg: Message) -> None:
        if self.bus.connected and not self.closed:
            self.bus.send(msg)

    # -- dispatch --------------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> Message | bool | None:
        if msg.message_type == MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == names.DBUS_NAME:
                name, _old, new = msg.body
                if not new and name.startswith(":") and self.on_name_lost is not None:
                    self.on_name_lost(name)
            return None
        if msg.message_type != MessageType.METHOD_CALL or self.closed:
            return None
        path = msg.path or "/"
        iface = msg.interface
        member = msg.member or ""
        if iface == names.PEER:
            return None  # dbus-fast answers Ping/GetMachineId
        if iface == names.INTROSPECTABLE and member == "Introspect":
            return Message.new_method_return(msg, "s", [self._introspect(path)])
        if self.before_call is not None:
            early = self.before_call(msg)
            if early is not None:
                return early
        call = Call(msg.sender or "", self.owner, msg, self)
        target: FakeInterface | None = None
        started = asyncio.get_running_loop().time()
        try:
            if path == self.object_manager and iface in (None, names.OBJECT_MANAGER) \
                    and member == "GetManagedObjects":
                if msg.signature != "":
                    raise FakeError(names.E_UNKNOWN_METHOD, "GetManagedObjects takes no arguments")
                return Message.new_method_return(msg, "a{oa{sa{sv}}}", [self.managed_objects()])
            obj = self.objects.get(path)
            if obj is None:
                raise FakeError(names.E_UNKNOWN_OBJECT, f"Method \"{member}\" with signature \"{msg.signature}\" "
                                                       f"on interface \"{iface}\" doesn't exist")
            if iface == names.PROPERTIES:
                return self._properties(call, obj)
            target = obj.get(iface) if iface else next((i for i in obj.values() if member in i.methods), None)
            method = target.methods.get(member) if target is not None else None
            if target is None or method is None:
                raise FakeError(names.E_UNKNOWN_METHOD, f"Method \"{member}\" with signature \"{msg.signature}\" "
                                                        f"on interface \"{iface}\" doesn't exist")
            if method.in_sig != msg.signature:
                if self.bad_args_error is not None:
                    raise FakeError(*self.bad_args_error)
                raise FakeError(names.E_UNKNOWN_METHOD, f"Method \"{member}\" with signature \"{msg.signature}\" "
                                                        f"on interface \"{iface}\" doesn't exist")
            result = method.handler(call, *msg.body)
        except FakeError as exc:
            if target is not None:
                target.call_done(call, started, f"{exc.name}: {exc.text}")
            return Message.new_error(msg, exc.name, exc.text)
        except Exception as exc:
            return self._failure(call, target, started, exc)
        if inspect.isawaitable(result):
            assert target is not None
            task = asyncio.get_running_loop().create_task(self._finish(call, target, method, result, started))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        if result is DEFERRED or call.replied:
            return True
        assert target is not None
        target.call_done(call, started, "ok")
        return Message.new_method_return(msg, method.out_sig, list(result or []))

    def _failure(self, call: Call, target: FakeInterface | None, started: float, exc: Exception) -> Message:
        msg = call.message
        if self.arg_errors and isinstance(exc, self.arg_errors) and self.bad_args_error is not None:
            log.debug("bad call %s.%s: %s", msg.interface, msg.member, exc)
            name, text = self.bad_args_error
        else:  # a bug in the fake: answer, never leave the caller hanging
            log.exception("fake service: %s.%s failed", msg.interface, msg.member)
            name, text = self.error_prefix + "Failed", f"simulator error: {exc}"
        if target is not None:
            target.call_done(call, started, f"{name}: {text}")
        return Message.new_error(msg, name, text)

    async def _finish(self, call: Call, target: FakeInterface, method: Method, result: Awaitable[Any],
                      started: float) -> None:
        try:
            body = await result
        except FakeError as exc:
            target.call_done(call, started, f"{exc.name}: {exc.text}")
            call.error(exc.name, exc.text)
            return
        except asyncio.CancelledError:
            return  # the service went away: the caller gets NoReply from the bus
        except Exception as exc:
            if not call.replied:
                call.replied = True
                self.send(self._failure(call, target, started, exc))
            return
        target.call_done(call, started, "ok")
        if body is not DEFERRED:
            call.reply(method.out_sig, list(body or []))

    def managed_objects(self) -> dict[str, dict[str, dict[str, Variant]]]:
        # Objects not announced yet are already in a snapshot (gdbus registers them at once).
        return {path: {n: i.properties() for n, i in obj.items()}
                for path, obj in sorted(self.objects.items()) if path not in self.hidden}

    def _properties(self, call: Call, obj: dict[str, FakeInterface]) -> Message | bool:
        msg = call.message
        member, sig = msg.member, msg.signature
        if self.ofono:
            if member == "GetAll":
                return Message.new_method_return(msg, "a{sv}", [{}])  # gdbus answers nothing useful for oFono
            raise FakeError(names.E_INVALID_ARGS, "No such property")
        if member == "GetAll" and sig == "s":
            return Message.new_method_return(msg, "a{sv}", [self._iface(obj, msg.body[0]).properties()])
        if member == "Get" and sig == "ss":
            props = self._iface(obj, msg.body[0]).properties()
            if msg.body[1] not in props:
                raise FakeError(names.E_INVALID_ARGS, f"No such property '{msg.body[1]}'")
            return Message.new_method_return(msg, "v", [props[msg.body[1]]])
        if member == "Set" and sig == "ssv":
            iface = self._iface(obj, msg.body[0])
            if msg.body[1] not in iface.property_signatures():
                raise FakeError(names.E_INVALID_ARGS, f"No such property '{msg.body[1]}'")
            result = iface.set_property(call, msg.body[1], msg.body[2])
            if result is None:
                return Message.new_method_return(msg)
            task = asyncio.get_running_loop().create_task(self._finish(call, iface, Method("ssv", "", _noop),
                                                                       result, 0.0))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        raise FakeError(names.E_UNKNOWN_METHOD, f"Method \"{member}\" with signature \"{sig}\" on interface "
                                                f"\"{names.PROPERTIES}\" doesn't exist")

    @staticmethod
    def _iface(obj: dict[str, FakeInterface], name: str) -> FakeInterface:
        iface = obj.get(name)
        if iface is None:
            raise FakeError(names.E_INVALID_ARGS, f"No such interface '{name}'")
        return iface

    def _introspect(self, path: str) -> str:
        esc = xml.sax.saxutils.quoteattr
        parts = ['<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
                 ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n<node>\n',
                 f'<interface name="{names.INTROSPECTABLE}"><method name="Introspect">'
                 '<arg name="xml" type="s" direction="out"/></method></interface>\n']
        if path == self.object_manager:
            parts.append(f'<interface name="{names.OBJECT_MANAGER}"><method name="GetManagedObjects">'
                         '<arg name="objects" type="a{oa{sa{sv}}}" direction="out"/></method>'
                         '<signal name="InterfacesAdded"><arg type="o"/><arg type="a{sa{sv}}"/></signal>'
                         '<signal name="InterfacesRemoved"><arg type="o"/><arg type="as"/></signal>'
                         '</interface>\n')
        obj = self.objects.get(path)
        if obj is not None and not self.ofono:
            parts.append(f'<interface name="{names.PROPERTIES}"><method name="Get"><arg type="s" direction="in"/>'
                         '<arg type="s" direction="in"/><arg type="v" direction="out"/></method>'
                         '<method name="Set"><arg type="s" direction="in"/><arg type="s" direction="in"/>'
                         '<arg type="v" direction="in"/></method><method name="GetAll"><arg type="s" '
                         'direction="in"/><arg type="a{sv}" direction="out"/></method>'
                         '<signal name="PropertiesChanged"><arg type="s"/><arg type="a{sv}"/><arg type="as"/>'
                         '</signal></interface>\n')
        for iface in (obj or {}).values():
            parts.append(f"<interface name={esc(iface.name)}>")
            for m_name, m in iface.methods.items():
                args = "".join(f'<arg type="{t}" direction="in"/>' for t in split_signature(m.in_sig))
                args += "".join(f'<arg type="{t}" direction="out"/>' for t in split_signature(m.out_sig))
                parts.append(f"<method name={esc(m_name)}>{args}</method>")
            for s_name, s_sig in iface.signals.items():
                parts.append(f"<signal name={esc(s_name)}>"
                             + "".join(f'<arg type="{t}"/>' for t in split_signature(s_sig)) + "</signal>")
            if not self.ofono:
                rw = iface.writable()
                for p, s in iface.property_signatures().items():
                    acc = "readwrite" if p in rw else "read"
                    parts.append(f'<property name={esc(p)} type="{s}" access="{acc}"/>')
            parts.append("</interface>\n")
        prefix = path.rstrip("/") + "/"
        kids = sorted({p[len(prefix):].split("/")[0] for p in self.objects if p.startswith(prefix)})
        parts.extend(f"<node name={esc(k)}/>" for k in kids)
        parts.append("</node>\n")
        return "".join(parts)


def _noop(call: Call, *args: Any) -> None:
    return None
