"""The world ``dashbridge-sim up`` and ``shell`` build from their command line: ``--world``
(a scenario file's world), ``--phone`` and ``--config``; and the environment they print for it."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from .phone import VirtualPhone
from .world import World, WorldSpec


def world_spec(args: argparse.Namespace) -> WorldSpec | None:
    """The world ``up``/``shell`` build: a scenario file's world (``--world``), phones from
    ``--phone`` and config from ``--config``; None (and a message) when something is wrong."""
    from .scenario import ScenarioError, load_world  # the runner, only when a scenario file is given
    from .world import _merge

    spec = WorldSpec()
    if getattr(args, "world", None):
        try:
            spec = load_world(args.world).world_spec()
        except ScenarioError as exc:
            print(f"dashbridge-sim: {exc}", file=sys.stderr)
            return None
    if getattr(args, "config", None):
        import yaml

        try:
            config = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            print(f"dashbridge-sim: {args.config}: {exc}", file=sys.stderr)
            return None
        if not isinstance(config, dict):
            print(f"dashbridge-sim: {args.config}: expected a mapping of config keys", file=sys.stderr)
            return None
        spec.config = _merge(spec.config, config)
    for text in getattr(args, "phone", None) or []:
        try:
            spec.phones.append(parse_phone(text))
        except ValueError as exc:
            print(f"dashbridge-sim: --phone {text!r}: {exc}", file=sys.stderr)
            return None
    spec.daemon = not args.no_daemon
    return spec


def parse_phone(text: str) -> VirtualPhone:
    """``name=Alice's Pixel,address=AA:BB:CC:DD:EE:01[,bonded=true][,contacts=50|FILE.vcf][,passkey=123456]
    [,history=FILE|DIR][,messages=FILE|DIR]`` — history: call-history vCards (ich/och/mch/cch, with
    X-IRMC-CALL-DATETIME); messages: a YAML/JSON list or a directory of bMessages."""
    fields: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"expected key=value, got {part!r}")
        if key in ("name", "address", "pairing", "pin", "operator"):
            fields[key] = value
        elif key in ("passkey", "battery", "signal"):
            fields[key] = int(value)
        elif key == "contacts":  # a number of generated contacts, or a .vcf dump of a real phone
            if value.isdigit():
                fields["generated_contacts"] = int(value)
            elif Path(value).is_file():
                fields["contacts_vcf"] = str(Path(value).resolve())
            else:
                raise ValueError(f"contacts={value}: expected a number or an existing .vcf file")
        elif key in ("history", "messages"):  # call history vCards / messages from files (a phone's dump)
            if not Path(value).exists():
                raise ValueError(f"{key}={value}: no such file or directory")
            fields[f"{key}_from"] = str(Path(value).resolve())
        elif key == "profiles":
            fields["profiles"] = tuple(x for x in value.split("+") if x)
        elif key in ("bonded", "auto_reconnect", "discoverable", "in_range"):
            fields[key] = value.lower() in ("1", "true", "yes", "on")
        else:
            raise ValueError(f"unknown key {key} (name, address, pairing, passkey, pin, contacts=N|FILE.vcf, "
                             "history=FILE|DIR, messages=FILE|DIR, profiles=hfp+pbap+map, bonded, auto_reconnect)")
    if "address" not in fields:
        raise ValueError("address= is required")
    return VirtualPhone(**fields)


def developer_env(world: World) -> dict[str, str]:
    """What a developer exports to reach the world (dashbridgectl, a hand-started daemon): the
    world's env plus the daemon's state directory (so a hand-started daemon never uses
    /var/lib/dashbridge)."""
    env = dict(world.env())
    env["STATE_DIRECTORY"] = str(world._state_dir())
    return env


def export_line(key: str, value: str) -> str:
    return f"export {key}={shlex.quote(value)}"
