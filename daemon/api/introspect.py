"""``org.freedesktop.DBus.Introspectable.Introspect`` at ``/org/dashbridge``, answered from the
documented introspection XML (``daemon/api/xml/*.xml``).

dbus-fast builds introspection data from the Python signatures alone: no description annotations,
no signal argument names, no out-argument names.  The XML files are the source of truth for the
API (docs/api/*.md and the scenario runner follow them), so the daemon serves them: for every
``org.dashbridge.*`` interface actually exported at the path, the XML file's ``<interface>``
element replaces the generated one — but only when both have the same shape (members, argument
types and directions, property types and access).  An interface whose code drifted from its XML
is served as generated and logged as an error (``tests/bus/test_api_xml.py`` then fails: the
annotations are missing).  The standard interfaces and child nodes stay as dbus-fast makes them.

The caller gate (:mod:`daemon.api.auth`) leaves ``Introspect`` open; so does this handler, which
only answers calls that carry the ``Introspectable`` interface header.
"""

from __future__ import annotations

import functools
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ..dbus import names

log = logging.getLogger(__name__)

XML_DIR = Path(__file__).with_name("xml")
DOCTYPE = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
           ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')

Shape = dict[str, object]


def shape(iface: ET.Element) -> Shape:
    """What the bus can tell about an interface: members, argument types and directions, property
    types and access (names of arguments and annotations are not part of it)."""
    def args(el: ET.Element, default_dir: str) -> list[tuple[str, str]]:
        return [(a.get("type", ""), a.get("direction", default_dir)) for a in el.findall("arg")]

    return {
        "methods": {m.get("name"): args(m, "in") for m in iface.findall("method")},
        "signals": {s.get("name"): [t for t, _ in args(s, "out")] for s in iface.findall("signal")},
        "properties": {p.get("name"): (p.get("type"), p.get("access")) for p in iface.findall("property")},
    }


@functools.cache
def documented() -> dict[str, ET.Element]:
    """Interface name -> its ``<interface>`` element from ``daemon/api/xml``."""
    out: dict[str, ET.Element] = {}
    for f in sorted(XML_DIR.glob("org.dashbridge.*.xml")):
        for iface in ET.parse(f).getroot().findall("interface"):
            out[iface.get("name", "")] = iface
    return out


def node_xml(node: ET.Element, path: str) -> str:
    """The generated introspection of ``path`` with every documented interface taken from its XML."""
    docs = documented()
    for i, el in enumerate(list(node)):
        name = el.get("name", "")
        if el.tag != "interface" or name not in docs:
            continue
        if shape(el) != shape(docs[name]):
            log.error("%s as exported differs from daemon/api/xml/%s.xml; introspection serves the generated one",
                      name, name)
            continue
        node.remove(el)
        node.insert(i, docs[name])
    node.set("name", path)
    ET.indent(node)
    return DOCTYPE + ET.tostring(node, encoding="unicode") + "\n"


class XmlIntrospection:
    """Install with :meth:`install` (after the interfaces are exported)."""

    def __init__(self, bus: MessageBus, paths: tuple[str, ...] = (names.DASHBRIDGE_PATH,)) -> None:
        self.bus = bus
        self.paths = paths

    def install(self) -> None:
        self.bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> Message | None:
        if (msg.message_type != MessageType.METHOD_CALL or msg.interface != names.INTROSPECTABLE_IFACE
                or msg.member != "Introspect" or msg.path not in self.paths or msg.signature):
            return None
        generated = self.bus._introspect_export_path(msg.path).to_xml()
        return Message.new_method_return(msg, "s", [node_xml(generated, msg.path)])
