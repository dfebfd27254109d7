"""Record what was done (in the shell, or by a tool) as a scenario file that replays it.

    rec = Recorder.for_world(spec, name="Pairing from the shell")
    rec.record({"dashboard": "open_pairing_window"})
    rec.record({"phone": "alice", "do": "pair"})
    rec.record({"expect_signal": "Phones1.PromptRequested", "save": "prompt"})
    rec.save("pairing.yaml")     # a valid scenario: dashbridge-sim run pairing.yaml replays it

Every recorded step is checked at once against the scenario schema (the same loader as
``dashbridge-sim run``, with the world and the steps before it), so a step that could not replay
is refused when it is recorded (:class:`ScenarioError`), not when the file is run.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from ..phone import PhoneMessage, VirtualPhone
from ..world import WorldSpec
from .schema import WORLD_KEYS, ScenarioError, loads

_TYPES = {"SMS_GSM": "sms", "SMS_CDMA": "sms", "MMS": "mms", "EMAIL": "email"}
# VirtualPhone fields a scenario phone takes as they are (the others are the simulator's own).
_PLAIN = ("name", "address", "pairing", "passkey", "pin", "profiles", "bonded", "in_range", "accepts_pairing",
          "discoverable", "auto_reconnect", "battery", "signal", "operator", "pbap_permission",
          "map_notifications", "history_from")


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Quote what could be read as something else (addresses, numbers, "yes"); block text when long.
    style = '"' if re.fullmatch(r"[0-9A-Fa-f:+ .-]*|yes|no|on|off|true|false|null|~", value, re.I) else None
    if "\n" in value:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def phone_id(phone: VirtualPhone) -> str:
    """The id a recorded scenario gives a phone (from its name)."""
    return re.sub(r"\W+", "_", phone.name).strip("_").lower() or "phone"


def phone_dict(phone: VirtualPhone, pid: str | None = None) -> dict[str, Any]:
    """A phone as a scenario's ``world.phones`` entry: the keys that differ from a new phone's."""
    fresh = VirtualPhone(phone.address)
    out: dict[str, Any] = {"id": pid or phone_id(phone)}
    for key in _PLAIN:
        value = getattr(phone, key)
        if key in ("name", "address") or value != getattr(fresh, key):
            out[key] = list(value) if isinstance(value, tuple) else value
    if phone.contacts_vcf:
        out["contacts"] = {"vcf": phone.contacts_vcf}
    elif phone.generated_contacts:
        out["contacts"] = {"generated": phone.generated_contacts}
    if "history_from" in out:
        out["history"] = out.pop("history_from")
    if phone.messages:
        out["messages"] = [_message(m) for m in phone.messages]
    if phone.companion is not None:
        out["companion"] = True
    return out


def _message(m: PhoneMessage) -> dict[str, Any]:
    text = m.body
    if m.type == "EMAIL":  # the stored body is the whole RFC 5322 message: keep its text
        text = re.split(r"\r?\n\r?\n", m.body, maxsplit=1)[-1] if "\n\n" in m.body.replace("\r", "") else m.body
    out = {"type": _TYPES.get(m.type, "sms"), "folder": m.folder, "sender": m.sender, "sender_name": m.sender_name,
           "recipient": m.recipient, "subject": m.subject, "text": text, "timestamp": m.timestamp, "read": m.read}
    return {k: v for k, v in out.items() if v not in ("", None) or k == "text"}


def world_dict(spec: WorldSpec, ids: dict[str, str] | None = None) -> dict[str, Any]:
    """A :class:`~simulator.world.WorldSpec` as a scenario's ``world:`` (``ids``: address -> phone id)."""
    ids = ids or {}
    world: dict[str, Any] = {}
    if spec.config:
        world["config"] = copy.deepcopy(spec.config)
    if spec.phones:
        world["phones"] = [phone_dict(p, ids.get(p.address)) for p in spec.phones]
    for key in ("backend", "navigation", "bluez"):
        value = getattr(spec, key, None)
        if value:
            world[key] = copy.deepcopy(dict(value))
    if not spec.daemon:
        world["daemon"] = False
    return world


class Recorder:
    """Steps recorded one by one; :meth:`save` writes them as a scenario (schema version 1)."""

    def __init__(self, name: str = "Recorded session", *, world: dict[str, Any] | None = None,
                 description: str = "", tags: tuple[str, ...] = ("recorded",)) -> None:
        unknown = set(world or {}) - set(WORLD_KEYS)
        if unknown:
            raise ValueError(f"world: unknown key {sorted(unknown)[0]} (known: {', '.join(WORLD_KEYS)})")
        self.name = name
        self.description = description
        self.tags = tags
        self.world: dict[str, Any] = copy.deepcopy(world or {})
        self.steps: list[dict[str, Any]] = []

    @classmethod
    def for_world(cls, spec: WorldSpec, name: str = "Recorded session", *, ids: dict[str, str] | None = None,
                  **kw: Any) -> Recorder:
        return cls(name, world=world_dict(spec, ids), **kw)

    def add_phone(self, phone: dict[str, Any]) -> None:
        """A phone that joined the world during the session (the shell's ``add``): in the replay it
        is in the world from the start (a scenario has no step that adds one)."""
        phones = self.world.setdefault("phones", [])
        if not any(p.get("address") == phone.get("address") for p in phones):
            phones.append(copy.deepcopy(phone))

    def record(self, step: dict[str, Any]) -> None:
        """Add one step (a scenario step as a mapping, e.g. ``{"phone": "alice", "do": "pair"}``).
        ScenarioError, and nothing recorded, if it would not load."""
        if not isinstance(step, dict) or not step:
            raise ValueError("a step is a mapping, e.g. {'dashboard': 'open_pairing_window'}")
        self.steps.append(copy.deepcopy(step))
        try:
            loads(self.text(), "<recording>")
        except ScenarioError as exc:
            self.steps.pop()
            # The steps before it loaded: what is wrong is this step (or the world, for the first).
            raise ScenarioError("<recording>", None, f"step {len(self.steps) + 1} not recorded: "
                                f"{'; '.join(e.message for e in exc.errors)}") from None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": 1, "name": self.name}
        if self.description:
            doc["description"] = self.description
        if self.tags:
            doc["tags"] = list(self.tags)
        if self.world:
            doc["world"] = self.world
        doc["steps"] = self.steps or [{"say": "nothing was recorded"}]
        return doc

    def text(self) -> str:
        return "# Recorded by dashbridge-sim; replay with: dashbridge-sim run THIS_FILE\n" + \
            yaml.dump(self.document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)

    def save(self, path: str | Path) -> Path:
        """Write the scenario; it is loaded back first (a file that would not run is not written)."""
        p = Path(path)
        text = self.text()
        loads(text, p)
        p.write_text(text, encoding="utf-8")
        return p


__all__ = ["Recorder", "phone_dict", "phone_id", "world_dict"]
