"""What the daemon exports at /org/dashbridge matches the documented introspection XML, and
every org.dashbridge interface the daemon exports is documented (XML + docs/api/<Name>.md).
Runtime introspection (``busctl introspect``) is the XML: description annotations, signal and
out-argument names included."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call
from dashbridge.simulator.daemonproc import DaemonProcess

ROOT = Path(__file__).parents[2]
XML_DIR = ROOT / "daemon" / "api" / "xml"


def _shape(iface: ET.Element) -> dict[str, object]:
    def args(el: ET.Element, default_dir: str) -> list[tuple[str, str]]:
        return [(a.get("type", ""), a.get("direction", default_dir)) for a in el.findall("arg")]

    return {
        "methods": {m.get("name"): args(m, "in") for m in iface.findall("method")},
        "signals": {s.get("name"): [t for t, _ in args(s, "out")] for s in iface.findall("signal")},
        "properties": {p.get("name"): (p.get("type"), p.get("access")) for p in iface.findall("property")},
    }


def _full(iface: ET.Element) -> dict[str, object]:
    """Everything introspection says about an interface: member names, argument names, types and
    directions, property types and access, annotations."""
    def annotations(el: ET.Element) -> list[tuple[str | None, str | None]]:
        return [(a.get("name"), a.get("value")) for a in el.findall("annotation")]

    out: dict[str, object] = {"": annotations(iface)}
    for el in iface:
        if el.tag in ("method", "signal", "property"):
            args = [(a.get("name"), a.get("type"), a.get("direction", "in" if el.tag == "method" else "out"))
                    for a in el.findall("arg")]
            out[f"{el.tag} {el.get('name')}"] = (args, el.get("type"), el.get("access"), annotations(el))
    return out


def _documented() -> dict[str, dict[str, object]]:
    out = {}
    for f in sorted(XML_DIR.glob("org.dashbridge.*.xml")):
        node = ET.parse(f).getroot()
        for iface in node.findall("interface"):
            name = iface.get("name", "")
            assert f.name == f"{name}.xml", f"{f.name} must document exactly {name}"
            for el in iface.iter():
                if el.tag in ("method", "signal", "property"):
                    docs = [a for a in el.findall("annotation") if a.get("name") == "org.freedesktop.DBus.Description"]
                    assert docs and docs[0].get("value"), f"{name}.{el.get('name')} has no description annotation"
            out[name] = _shape(iface)
    return out


async def test_exported_api_matches_the_xml(daemon: DaemonProcess, client: MessageBus) -> None:
    (xml,) = await call(client, "org.dashbridge", "/org/dashbridge", "org.freedesktop.DBus.Introspectable",
                        "Introspect")
    node = ET.fromstring(xml)
    ours = [i for i in node.findall("interface") if i.get("name", "").startswith("org.dashbridge.")]
    exported = {i.get("name", ""): _shape(i) for i in ours}
    documented = _documented()
    assert "org.dashbridge.Daemon1" in exported
    for name, shape in exported.items():
        assert name in documented, f"{name} is exported but has no daemon/api/xml/{name}.xml"
        assert shape == documented[name], f"{name}: exported API differs from its XML"
        short = name.removeprefix("org.dashbridge.")
        assert (ROOT / "docs" / "api" / f"{short}.md").exists(), f"docs/api/{short}.md is missing"
    # ... and what introspection says is the XML, annotations and argument names included.
    files = {i.get("name", ""): i for f in XML_DIR.glob("org.dashbridge.*.xml")
             for i in ET.parse(f).getroot().findall("interface")}
    for iface in ours:
        name = iface.get("name", "")
        assert _full(iface) == _full(files[name]), f"{name}: runtime introspection is not its XML"
    assert {i.get("name") for i in node.findall("interface")} >= {
        "org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Properties", "org.freedesktop.DBus.Peer"}
    assert node.get("name") == "/org/dashbridge"
    assert [n.get("name") for n in node.findall("node")] == ["agent"]


async def test_busctl_style_introspection_shows_descriptions_and_names(daemon: DaemonProcess,
                                                                       client: MessageBus) -> None:
    (xml,) = await call(client, "org.dashbridge", "/org/dashbridge", "org.freedesktop.DBus.Introspectable",
                        "Introspect")
    node = ET.fromstring(xml)
    phones = next(i for i in node.findall("interface") if i.get("name") == "org.dashbridge.Phones1")
    opw = next(m for m in phones.findall("method") if m.get("name") == "OpenPairingWindow")
    assert [(a.get("name"), a.get("direction")) for a in opw.findall("arg")] == [("seconds", "in"), ("granted", "out")]
    finished = next(s for s in phones.findall("signal") if s.get("name") == "PairingFinished")
    assert [a.get("name") for a in finished.findall("arg")] == ["address", "success", "reason"]
    assert "Description" in (finished.find("annotation").get("name") or "")  # type: ignore[union-attr]


def test_every_xml_file_parses_and_is_described() -> None:
    assert "org.dashbridge.Daemon1" in _documented()
