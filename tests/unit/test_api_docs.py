"""docs/api/*.md and the introspection XML (daemon/api/xml, the source of truth; the scenario runner
names signal arguments from it) say the same: every method, signal and property of every interface
is in a table of its page, with the XML's argument names (method in-arguments, signal arguments),
types (in and out) and property types — and nothing is documented that the XML does not have.

The tables the parser reads (the header names the columns):

* ``| member | signature | meaning |`` — methods: ``Name(a, b)`` and ``ss → u``;
* ``| member | arguments | when |`` — signals: ``Name`` and ``s a, u b`` (type, name);
* ``| property | type | meaning |`` — properties;
* ``| member | kind | type | meaning |`` — any of the three, kind ``method``, ``signal`` or
  ``property …``; ``Name(a, b)`` with ``ss`` (signal) or ``ss → u`` (method).

Several names in one cell (```A` / `B``) take the types of the type cell in order (``s / x``).
A table belongs to the page's interface, or to the last heading that names ``org.dashbridge.X``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
XML_DIR = ROOT / "daemon" / "api" / "xml"
DOCS = ROOT / "docs" / "api"
ARROW = "→"


@dataclass(frozen=True)
class Member:
    kind: str  # method | signal | property
    names: tuple[str, ...] | None  # argument names (method: in; signal: all); None: not given
    types: tuple[str, ...]  # method: (in, out); signal: (args,); property: (type,)


def _xml() -> dict[str, dict[str, Member]]:
    out: dict[str, dict[str, Member]] = {}
    for f in sorted(XML_DIR.glob("org.dashbridge.*.xml")):
        for iface in ET.parse(f).getroot().findall("interface"):
            members: dict[str, Member] = {}
            for m in iface.findall("method"):
                ins = [a for a in m.findall("arg") if a.get("direction", "in") == "in"]
                outs = [a for a in m.findall("arg") if a.get("direction") == "out"]
                members[m.get("name", "")] = Member(
                    "method", tuple(a.get("name", "") for a in ins),
                    ("".join(a.get("type", "") for a in ins), "".join(a.get("type", "") for a in outs)))
            for s in iface.findall("signal"):
                args = s.findall("arg")
                members[s.get("name", "")] = Member("signal", tuple(a.get("name", "") for a in args),
                                                    ("".join(a.get("type", "") for a in args),))
            for p in iface.findall("property"):
                members[p.get("name", "")] = Member("property", None, (p.get("type", ""),))
            out[iface.get("name", "")] = members
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _names_in(cell: str) -> list[tuple[str, tuple[str, ...] | None]]:
    """```Name(a, b)` / `Other``` -> [("Name", ("a", "b")), ("Other", None)]."""
    out: list[tuple[str, tuple[str, ...] | None]] = []
    for code in re.findall(r"`([^`]+)`", cell):
        m = re.fullmatch(r"([A-Z][A-Za-z0-9]*)(?:\((.*)\))?", code.strip())
        if not m:
            continue
        args = None if m.group(2) is None else tuple(a.strip() for a in m.group(2).split(",") if a.strip())
        out.append((m.group(1), args))
    return out


def _sig(text: str) -> str:
    text = text.strip().strip("`").strip()
    return "" if text in ("", "()") else text


def _member(kind: str, args: tuple[str, ...] | None, type_cell: str) -> Member:
    t = type_cell.replace("`", "").strip()
    if kind == "method":
        ins, _, outs = t.partition(ARROW)
        return Member("method", args, (_sig(ins), _sig(outs)))
    if kind == "signal":
        if "," in t or " " in t.strip():  # "s call, a{sv} properties"
            pairs = [p.split() for p in t.split(",")] if t else []
            return Member("signal", tuple(p[1] for p in pairs if len(p) == 2),
                          ("".join(p[0] for p in pairs if p),))
        return Member("signal", args, (_sig(t),))
    return Member("property", None, (_sig(t),))


def _documented() -> dict[str, dict[str, list[Member]]]:
    out: dict[str, dict[str, list[Member]]] = {}
    for page in sorted(DOCS.glob("*.md")):
        iface = f"org.dashbridge.{page.stem}"
        header: list[str] | None = None
        for line in page.read_text().splitlines():
            if line.startswith("#"):
                named = re.search(r"org\.dashbridge\.([A-Za-z0-9]+)", line)
                if named:
                    iface = named.group(0)
                header = None
                continue
            if not line.startswith("|"):
                header = None
                continue
            cells = _cells(line)
            if header is None:
                header = [c.lower() for c in cells]
                continue
            if set(line) <= set("|-: "):
                continue
            if header[0] not in ("member", "property"):
                continue
            if "kind" in header:
                kind_text = cells[header.index("kind")]
                kind = next((k for k in ("method", "signal", "property") if kind_text.startswith(k)), "")
                type_cell = cells[header.index("type")]
            elif "signature" in header:
                kind, type_cell = "method", cells[header.index("signature")]
            elif "arguments" in header:
                kind, type_cell = "signal", cells[header.index("arguments")]
            elif header[0] == "property" and "type" in header:
                kind, type_cell = "property", cells[header.index("type")]
            else:
                continue
            if not kind:
                continue
            names = _names_in(cells[0])
            types = [type_cell] if len(names) == 1 else [t.strip() for t in type_cell.split(" / ")]
            assert len(types) == len(names), f"{page.name}: {line}: {len(names)} names, {len(types)} types"
            for (name, args), t in zip(names, types, strict=True):
                out.setdefault(iface, {}).setdefault(name, []).append(_member(kind, args, t))
    return out


def test_the_parser_reads_every_format() -> None:
    docs = _documented()
    assert docs["org.dashbridge.Calls1"]["Dial"] == [Member("method", ("number", "phone"), ("ss", "s"))]
    assert docs["org.dashbridge.Calls1"]["CallRemoved"] == [Member("signal", ("call", "reason"), ("ss",))]
    assert docs["org.dashbridge.Cloud1"]["GraceUntil"] == [Member("property", None, ("x",))]
    assert docs["org.dashbridge.Daemon1"]["Ping"] == [Member("method", (), ("", "s"))]


def test_every_member_of_the_xml_is_documented_as_the_xml_says() -> None:
    xml, docs = _xml(), _documented()
    problems: list[str] = []
    for iface, members in xml.items():
        page = docs.get(iface, {})
        for name, want in members.items():
            rows = page.get(name)
            if not rows:
                problems.append(f"{iface}.{name} ({want.kind}) is in no table of docs/api/")
                continue
            for got in rows:
                if got.kind != want.kind:
                    problems.append(f"{iface}.{name}: documented as a {got.kind}, the XML has a {want.kind}")
                elif got.types != want.types:
                    problems.append(f"{iface}.{name}: documented types {got.types}, the XML says {want.types}")
                elif got.names is not None and got.names != want.names:
                    problems.append(f"{iface}.{name}: documented argument names {list(got.names)}, "
                                    f"the XML (and scenarios) use {list(want.names or ())}")
                elif got.names is None and want.kind == "signal" and want.names:
                    problems.append(f"{iface}.{name}: the signal's argument names are not documented")
        for name in set(page) - set(members):
            problems.append(f"{iface}.{name} is documented but not in the XML")
    for iface in set(docs) - set(xml):
        problems.append(f"docs/api documents {iface}, which has no XML")
    assert not problems, "\n".join(problems)
