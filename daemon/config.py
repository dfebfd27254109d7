"""Typed, frozen configuration from one YAML file.

Every error names the file, line and key path and what was expected, e.g.
``config.yaml:12 cloud.retry.max_delay: expected a duration like "30s", got "fast"``.
Unknown keys are errors.  Sections are plain frozen dataclasses; the loader reads their type
hints, so adding a setting is adding a field (with a default) and a line in
``systemd/config.example.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NewType, Union, get_args, get_origin, get_type_hints

import yaml

try:  # the C loader is ~9x faster (DESIGN.md §6)
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

DEFAULT_PATH = Path("/etc/dashbridge/config.yaml")

Duration = NewType("Duration", float)
"""Seconds; written in YAML as ``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"21d"`` or a number."""

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


class ConfigError(Exception):
    """A bad config file; ``str()`` is the one line to show the integrator."""


def parse_duration(text: str) -> float:
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


# ---------------------------------------------------------------------------------------------
# Sections.  Keep defaults safe for a head unit; document each field in config.example.yaml.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusesConfig:
    system: str | None = None  # None: $DBUS_SYSTEM_BUS_ADDRESS or the machine's system bus
    session: str | None = None  # None: $DBUS_SESSION_BUS_ADDRESS (obexd lives there)


@dataclass(frozen=True)
class ApiConfig:
    # Who may call org.dashbridge besides root and the daemon's own user (the D-Bus policy in
    # systemd/ is the first gate; this is the second, checked per call).
    allowed_groups: tuple[str, ...] = ("dashboard",)
    allowed_users: tuple[str, ...] = ()
    call_timeout: Duration = Duration(5.0)


@dataclass(frozen=True)
class BluetoothConfig:
    adapter: str = "hci0"
    alias: str = "dashbridge"
    device_class: int = 0x200420  # audio/video, car audio
    agent_capability: Literal[
        "DisplayOnly", "DisplayYesNo", "KeyboardOnly", "NoInputNoOutput", "KeyboardDisplay"
    ] = "DisplayYesNo"
    pairing_window: Duration = Duration(120.0)
    prompt_timeout: Duration = Duration(30.0)
    max_connected: int = 2
    connect_budget: Duration = Duration(8.0)
    first_connect_attempts: int = 3
    # Deadline for a car-initiated Device1.Pair() and for a phone-initiated pairing to finish after
    # the prompt was accepted: above bluetoothd's own 60 s agent timeout plus service discovery.
    pair_timeout: Duration = Duration(90.0)
    bluez_call_timeout: Duration = Duration(5.0)  # every other call to bluetoothd
    close_window_after_pairing: bool = True


@dataclass(frozen=True)
class CallsConfig:
    ofono_timeout: Duration = Duration(5.0)  # deadline for every call to oFono
    # Powering a phone's HFP modem waits for the service-level connection (oFono replies then).
    connect_timeout: Duration = Duration(15.0)
    # How long calls are kept (and shown) after oFono left the bus, waiting for it to come back.
    restart_grace: Duration = Duration(15.0)


@dataclass(frozen=True)
class ContactsConfig:
    region: str = "GB"  # ISO 3166 region for numbers stored without a country code
    page_size: int = 500  # PBAP MaxCount per PullAll
    wipe_on_disconnect: bool = False
    photo_max_bytes: int = 256 * 1024  # larger photos are dropped (the contact is kept)
    photos: bool = True
    favourites: bool = True  # pull telecom/fav where the phone offers it
    call_history: bool = True
    history_limit: int = 100  # newest entries of each of ich/och/mch
    sync_secondary: bool = False  # also sync phones connected as secondary (calls-only) phones
    connect_timeout: Duration = Duration(12.0)  # CreateSession (Android's car service: 12 s)
    call_timeout: Duration = Duration(10.0)  # Select/GetSize/PullAll replies
    stall_timeout: Duration = Duration(30.0)  # a transfer without progress this long is abandoned
    retry_delays: tuple[Duration, ...] = (Duration(2.0), Duration(5.0), Duration(15.0), Duration(60.0),
                                          Duration(300.0))  # after a failed sync (last one repeats)
    permission_retry_delays: tuple[Duration, ...] = (Duration(3.0), Duration(5.0), Duration(10.0),
                                                     Duration(30.0))  # phone's "allow contacts?" open


@dataclass(frozen=True)
class MessagesConfig:
    fetch_count: int = 50  # newest messages fetched when a phone's MAP connects ...
    fetch_days: int = 7  # ... from the last this many days
    poll_interval: Duration = Duration(120.0)  # only phones that never sent a notification
    keep_count: int = 500  # per phone; older messages are dropped from the car
    max_message_bytes: int = 1024 * 1024  # a larger message is read up to here and marked truncated
    connect_timeout: Duration = Duration(15.0)  # CreateSession (the phone may show a prompt)
    obex_timeout: Duration = Duration(10.0)  # every other obexd call
    transfer_idle_timeout: Duration = Duration(15.0)  # a transfer without progress for this long fails


@dataclass(frozen=True)
class NavigationServiceConfig:
    bus_name: str = "org.dashboard.Navigation"
    path: str = "/org/dashboard/Navigation"
    interface: str = "org.dashboard.Navigation1"
    method: str = "NavigateTo"


@dataclass(frozen=True)
class NavigationConfig:
    service: NavigationServiceConfig = field(default_factory=NavigationServiceConfig)
    intent_expiry: Duration = Duration(86400.0)
    delivery_timeout: Duration = Duration(5.0)
    retry_base: Duration = Duration(2.0)  # a failed delivery is retried after up to this, doubling ...
    retry_max: Duration = Duration(300.0)  # ... never more than this apart
    min_confidence: float = 0.0  # destinations found in messages below this are not offered


@dataclass(frozen=True)
class CloudTlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class CloudRetryConfig:
    base_delay: Duration = Duration(1.0)
    max_delay: Duration = Duration(3600.0)
    breaker_threshold: int = 5
    breaker_cooldown: Duration = Duration(60.0)
    # The breaker's cool-down doubles (full jitter) from breaker_cooldown up to this; it bounds
    # how long after the backend's return a car notices (bench: fleet_recovery_drain_s).
    breaker_max_cooldown: Duration = Duration(600.0)
    max_retry_after: Duration = Duration(6 * 3600.0)  # a longer Retry-After is cut to this


@dataclass(frozen=True)
class CloudConfig:
    enabled: bool = False
    url: str | None = None  # base URL; discovery is at <url>/.well-known/dashbridge
    vehicle_id: str | None = None
    request_timeout: Duration = Duration(10.0)
    sync_interval: Duration = Duration(3600.0)
    sync_jitter: float = 0.2  # each interval is sync_interval * U[1 - j, 1 + j]
    startup_delay: Duration = Duration(30.0)  # first sync after start: U[0, startup_delay]
    tls: CloudTlsConfig = field(default_factory=CloudTlsConfig)
    retry: CloudRetryConfig = field(default_factory=CloudRetryConfig)
    trust_anchors: dict[str, str] = field(default_factory=dict)  # kid -> base64url Ed25519 key
    clock_skew: Duration = Duration(300.0)
    grace: Duration = Duration(30 * 86400.0)
    offline_policy: dict[str, bool] = field(default_factory=dict)  # feature -> on/off offline
    gated_local_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    buses: BusesConfig = field(default_factory=BusesConfig)
    state_directory: str = "/var/lib/dashbridge"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    stop_timeout: Duration = Duration(10.0)  # < TimeoutStopSec in dashbridge.service
    api: ApiConfig = field(default_factory=ApiConfig)
    bluetooth: BluetoothConfig = field(default_factory=BluetoothConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    contacts: ContactsConfig = field(default_factory=ContactsConfig)
    messages: MessagesConfig = field(default_factory=MessagesConfig)
    navigation: NavigationConfig = field(default_factory=NavigationConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)


# ---------------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------------


class _Ctx:
    def __init__(self, filename: str) -> None:
        self.filename = filename

    def fail(self, node: yaml.Node | None, path: str, msg: str) -> typing.NoReturn:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        raise ConfigError(f"{self.filename}{line} {path or '<top>'}: {msg}")


def _show(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return f'"{node.value}"' if node.style or not node.value.replace(".", "").isdigit() else node.value
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a mapping"


def _scalar(ctx: _Ctx, node: yaml.Node, path: str, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        ctx.fail(node, path, f"expected {what}, got {_show(node)}")
    return str(node.value)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _convert(ctx: _Ctx, node: yaml.Node, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Duration:
        raw = _scalar(ctx, node, path, 'a duration like "30s"')
        try:
            value = parse_duration(raw)
        except ValueError:
            ctx.fail(node, path, f'expected a duration like "30s", got "{raw}"')
        return Duration(value)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if _is_null(node):
            if type(None) in get_args(tp):
                return None
            ctx.fail(node, path, "must not be empty")
        return _convert(ctx, node, args[0], path)
    if origin is Literal:
        raw = _scalar(ctx, node, path, "one of " + ", ".join(map(str, get_args(tp))))
        if raw not in get_args(tp):
            ctx.fail(node, path, f"expected one of {', '.join(map(str, get_args(tp)))}, got \"{raw}\"")
        return raw
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _load_section(ctx, node, tp, path)
    if tp is bool:
        raw = _scalar(ctx, node, path, "true or false")
        if node.tag != "tag:yaml.org,2002:bool":
            ctx.fail(node, path, f"expected true or false, got {_show(node)}")
        return raw.lower() in ("true", "yes", "on")
    if tp is int:
        raw = _scalar(ctx, node, path, "a whole number")
        try:
            return int(raw, 0) if node.tag == "tag:yaml.org,2002:int" else int(raw)
        except ValueError:
            ctx.fail(node, path, f"expected a whole number, got {_show(node)}")
    if tp is float:
        raw = _scalar(ctx, node, path, "a number")
        try:
            return float(raw)
        except ValueError:
            ctx.fail(node, path, f"expected a number, got {_show(node)}")
    if tp is str:
        if _is_null(node):
            ctx.fail(node, path, "expected a string, got nothing")
        return _scalar(ctx, node, path, "a string")
    if origin is tuple:
        (item_tp, _ellipsis) = get_args(tp)
        if not isinstance(node, yaml.SequenceNode):
            ctx.fail(node, path, f"expected a list, got {_show(node)}")
        return tuple(_convert(ctx, n, item_tp, f"{path}[{i}]") for i, n in enumerate(node.value))
    if origin is dict:
        _key_tp, val_tp = get_args(tp)
        if not isinstance(node, yaml.MappingNode):
            ctx.fail(node, path, f"expected a mapping, got {_show(node)}")
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            k = _scalar(ctx, knode, path, "a key")
            out[k] = _convert(ctx, vnode, val_tp, f"{path}.{k}")
        return out
    raise TypeError(f"config type {tp!r} not supported")  # a programming error, not user input


def _load_section(ctx: _Ctx, node: yaml.Node, cls: type[Any], path: str) -> Any:
    if _is_null(node):
        return cls()
    if not isinstance(node, yaml.MappingNode):
        ctx.fail(node, path, f"expected a mapping, got {_show(node)}")
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for knode, vnode in node.value:
        key = _scalar(ctx, knode, path, "a key")
        sub = f"{path}.{key}" if path else key
        if key not in fields:
            known = ", ".join(sorted(fields))
            ctx.fail(knode, sub, f"unknown key (known here: {known})")
        if key in kwargs:
            ctx.fail(knode, sub, "given twice")
        kwargs[key] = _convert(ctx, vnode, hints[key], sub)
    return cls(**kwargs)


def _validate(cfg: Config, ctx: _Ctx) -> None:
    b = cfg.bluetooth
    if not 1 <= b.max_connected <= 7:
        ctx.fail(None, "bluetooth.max_connected", f"expected 1 to 7, got {b.max_connected}")
    if len(b.alias.encode()) > 248:
        ctx.fail(None, "bluetooth.alias", "longer than 248 bytes")
    for key in ("pairing_window", "prompt_timeout", "connect_budget", "pair_timeout", "bluez_call_timeout"):
        if getattr(b, key) <= 0:
            ctx.fail(None, f"bluetooth.{key}", "must be longer than 0s")
    if not 1 <= b.first_connect_attempts <= 10:
        ctx.fail(None, "bluetooth.first_connect_attempts", f"expected 1 to 10, got {b.first_connect_attempts}")
    for key in ("ofono_timeout", "connect_timeout"):
        if getattr(cfg.calls, key) <= 0:
            ctx.fail(None, f"calls.{key}", "must be longer than 0s")
    if cfg.cloud.enabled and not cfg.cloud.url:
        ctx.fail(None, "cloud.url", "required when cloud.enabled is true")
    if cfg.cloud.enabled and not (cfg.cloud.url or "").startswith("https://"):
        ctx.fail(None, "cloud.url", f"expected an https:// URL, got \"{cfg.cloud.url}\"")
    if cfg.cloud.enabled and not cfg.cloud.vehicle_id:
        ctx.fail(None, "cloud.vehicle_id", "required when cloud.enabled is true")
    if not 0.0 <= cfg.cloud.sync_jitter <= 0.9:
        ctx.fail(None, "cloud.sync_jitter", f"expected 0 to 0.9, got {cfg.cloud.sync_jitter}")
    if bool(cfg.cloud.tls.cert_file) != bool(cfg.cloud.tls.key_file):
        ctx.fail(None, "cloud.tls", "cert_file and key_file go together")
    if cfg.contacts.page_size < 1 or cfg.contacts.page_size > 65535:
        ctx.fail(None, "contacts.page_size", f"expected 1 to 65535, got {cfg.contacts.page_size}")
    if not 1 <= cfg.contacts.history_limit <= 65535:
        ctx.fail(None, "contacts.history_limit", f"expected 1 to 65535, got {cfg.contacts.history_limit}")
    if cfg.contacts.photo_max_bytes < 0:
        ctx.fail(None, "contacts.photo_max_bytes", "must not be negative")
    if not cfg.contacts.retry_delays or not cfg.contacts.permission_retry_delays:
        ctx.fail(None, "contacts.retry_delays", "needs at least one delay")
    import phonenumbers  # validated here so a typo is a config error, not silent misses

    if phonenumbers.country_code_for_region(cfg.contacts.region.upper()) == 0:
        ctx.fail(None, "contacts.region", f'expected a region code like "GB", got "{cfg.contacts.region}"')
    m = cfg.messages
    if not 1 <= m.fetch_count <= 1024:
        ctx.fail(None, "messages.fetch_count", f"expected 1 to 1024, got {m.fetch_count}")
    if not 1 <= m.fetch_days <= 3650:
        ctx.fail(None, "messages.fetch_days", f"expected 1 to 3650, got {m.fetch_days}")
    if m.poll_interval < 10:
        ctx.fail(None, "messages.poll_interval", "expected at least 10s")
    if m.keep_count < m.fetch_count:
        ctx.fail(None, "messages.keep_count", "must not be smaller than messages.fetch_count")
    if not 4096 <= m.max_message_bytes <= 16 * 1024 * 1024:
        ctx.fail(None, "messages.max_message_bytes", "expected 4096 to 16777216")
    if not 0.0 <= cfg.navigation.min_confidence <= 1.0:
        ctx.fail(None, "navigation.min_confidence", "expected 0.0 to 1.0")


def loads(text: str, filename: str = "<config>") -> Config:
    ctx = _Ctx(filename)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{filename}{line} <top>: not valid YAML ({problem})") from None
    cfg = Config() if node is None else _load_section(ctx, node, Config, "")
    _validate(cfg, ctx)
    return cfg


def load(path: Path | str | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Load the file (or the defaults when ``path`` is None and the default file is absent),
    then apply the environment overrides systemd and the simulator use."""
    env = os.environ if env is None else env
    if path is None:
        path = DEFAULT_PATH if DEFAULT_PATH.exists() else None
    if path is None:
        cfg = Config()
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not UTF-8 text") from None
        cfg = loads(text, p.name)
    return with_env(cfg, env)


def with_env(cfg: Config, env: typing.Mapping[str, str]) -> Config:
    buses = cfg.buses
    if env.get("DBUS_SYSTEM_BUS_ADDRESS"):
        buses = dataclasses.replace(buses, system=env["DBUS_SYSTEM_BUS_ADDRESS"])
    if env.get("DBUS_SESSION_BUS_ADDRESS"):
        buses = dataclasses.replace(buses, session=env["DBUS_SESSION_BUS_ADDRESS"])
    state = cfg.state_directory
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several colon-separated directories; the first is ours.
        state = env["STATE_DIRECTORY"].split(":")[0]
    return dataclasses.replace(cfg, buses=buses, state_directory=state)


def overrides(cfg: Config, data: dict[str, Any], filename: str = "<overrides>") -> Config:
    """Apply a nested mapping of overrides (scenario files use this) with the same checks."""
    merged = _merge(dataclasses.asdict(cfg), data)
    text = yaml.safe_dump(merged, sort_keys=False)
    return loads(text, filename)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    for k, v in list(out.items()):
        if isinstance(v, tuple):
            out[k] = list(v)
    return out
