"""Typed, frozen configuration from one YAML file.

Every error names the file, line and key path and what was expected, e.g.
``config.yaml:12 cloud.retry.max_delay: expected a duration like "30s", got a string``; it never
repeats a value from the file (the file may be a symlink to a secret).  The file must be a regular
file of at most ``MAX_CONFIG_BYTES``.  Unknown keys are errors.  Sections are plain frozen
dataclasses; the loader reads their type hints, so adding a setting is adding a field with a
default and its range (``metadata=_r(lo, hi)``; a test walks every field) and a line in
``systemd/config.example.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from . import yamlload
from .yamlload import Duration as Duration  # re-exported: the settings' type
from .yamlload import parse_duration as parse_duration

DEFAULT_PATH = Path("/etc/dashbridge/config.yaml")
# Local phone features: never gated by the cloud unless cloud.gated_local_features lists them
# (DESIGN.md principle 1, local first); ``daemon/cloud/features.py`` re-exports them.
LOCAL_FEATURES: tuple[str, ...] = ("calls", "contacts", "messages", "message_navigation")


class ConfigError(Exception):
    """A bad config file; ``str()`` is the one line to show the integrator."""


# ---------------------------------------------------------------------------------------------
# Ranges.  Every setting declares the values it accepts next to its default (field metadata), so
# a setting added without one is caught by tests/unit/test_config.py (it walks every field).
# ---------------------------------------------------------------------------------------------

MS, S, MIN, HOUR, DAY = 0.001, 1.0, 60.0, 3600.0, 86400.0

RANGE = "range"  # numbers: the value; strings: the length in UTF-8 bytes; lists/mappings: each entry
ITEMS = "items"  # lists and mappings: how many entries


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float


def _r(lo: float | None = None, hi: float | None = None, *,
       items: tuple[int, int] | None = None) -> dict[str, Range]:
    """Field metadata: the accepted range (see ``RANGE``) and entry count (``ITEMS``)."""
    md: dict[str, Range] = {}
    if lo is not None or hi is not None:
        if lo is None or hi is None:
            raise TypeError("a range needs both ends")
        md[RANGE] = Range(lo, hi)
    if items is not None:
        md[ITEMS] = Range(*items)
    return md


PATH_MAX = 4096
NAME_MAX = 255  # D-Bus names, interface and member names

# ---------------------------------------------------------------------------------------------
# Sections.  Keep defaults safe for a head unit; document each field in config.example.yaml.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusesConfig:
    # None: $DBUS_SYSTEM_BUS_ADDRESS or the machine's system bus
    system: str | None = field(default=None, metadata=_r(1, PATH_MAX))
    # None: $DBUS_SESSION_BUS_ADDRESS (obexd lives there)
    session: str | None = field(default=None, metadata=_r(1, PATH_MAX))
    # Where obexd writes what it pulls from phones for us (absolute; see daemon/transfers.py).
    # None: $RUNTIME_DIRECTORY/obex under systemd, else <state_directory>/obex
    transfer_dir: str | None = field(default=None, metadata=_r(1, PATH_MAX))


@dataclass(frozen=True)
class ApiConfig:
    # Who may call org.dashbridge besides root and the daemon's own user (the D-Bus policy in
    # systemd/ is the first gate; this is the second, checked per call).
    allowed_groups: tuple[str, ...] = field(default=("dashboard",), metadata=_r(1, 256, items=(0, 256)))
    allowed_users: tuple[str, ...] = field(default=(), metadata=_r(1, 256, items=(0, 256)))
    call_timeout: Duration = field(default=Duration(5.0), metadata=_r(100 * MS, 5 * MIN))


@dataclass(frozen=True)
class BluetoothConfig:
    adapter: str = field(default="hci0", metadata=_r(1, 64))
    alias: str = field(default="dashbridge", metadata=_r(1, 248))  # the Bluetooth name: at most 248 bytes
    # audio/video, car audio (24-bit class of device)
    device_class: int = field(default=0x200420, metadata=_r(0, 0xFFFFFF))
    agent_capability: Literal[
        "DisplayOnly", "DisplayYesNo", "KeyboardOnly", "NoInputNoOutput", "KeyboardDisplay"
    ] = "DisplayYesNo"
    pairing_window: Duration = field(default=Duration(120.0), metadata=_r(1 * S, HOUR))
    prompt_timeout: Duration = field(default=Duration(30.0), metadata=_r(100 * MS, 10 * MIN))
    max_connected: int = field(default=2, metadata=_r(1, 7))
    connect_budget: Duration = field(default=Duration(8.0), metadata=_r(100 * MS, 10 * MIN))
    first_connect_attempts: int = field(default=3, metadata=_r(1, 10))
    # Deadline for a car-initiated Device1.Pair() and for a phone-initiated pairing to finish after
    # the prompt was accepted: above bluetoothd's own 60 s agent timeout plus service discovery.
    pair_timeout: Duration = field(default=Duration(90.0), metadata=_r(1 * S, 10 * MIN))
    # every other call to bluetoothd
    bluez_call_timeout: Duration = field(default=Duration(5.0), metadata=_r(100 * MS, 5 * MIN))
    close_window_after_pairing: bool = True


@dataclass(frozen=True)
class CallsConfig:
    # deadline for every call to oFono
    ofono_timeout: Duration = field(default=Duration(5.0), metadata=_r(100 * MS, 5 * MIN))
    # Powering a phone's HFP modem waits for the service-level connection (oFono replies then).
    connect_timeout: Duration = field(default=Duration(15.0), metadata=_r(100 * MS, 5 * MIN))
    # How long calls are kept (and shown) after oFono left the bus, waiting for it to come back.
    restart_grace: Duration = field(default=Duration(15.0), metadata=_r(0, HOUR))


_DELAYS = (100 * MS, DAY)


@dataclass(frozen=True)
class ContactsConfig:
    region: str = field(default="GB", metadata=_r(2, 2))  # ISO 3166 region for numbers stored without a country code
    page_size: int = field(default=500, metadata=_r(1, 65535))  # PBAP MaxCount per PullAll
    wipe_on_disconnect: bool = False
    # larger photos are dropped (the contact is kept)
    photo_max_bytes: int = field(default=256 * 1024, metadata=_r(0, 16 * 1024 * 1024))
    photos: bool = True
    favourites: bool = True  # pull telecom/fav where the phone offers it
    call_history: bool = True
    history_limit: int = field(default=100, metadata=_r(1, 65535))  # newest entries of each of ich/och/mch
    sync_secondary: bool = False  # also sync phones connected as secondary (calls-only) phones
    # CreateSession (Android: 12 s)
    connect_timeout: Duration = field(default=Duration(12.0), metadata=_r(100 * MS, 10 * MIN))
    # Select/GetSize/PullAll replies
    call_timeout: Duration = field(default=Duration(10.0), metadata=_r(100 * MS, 10 * MIN))
    # a transfer without progress this long is abandoned
    stall_timeout: Duration = field(default=Duration(30.0), metadata=_r(100 * MS, HOUR))
    # after a failed sync (last one repeats)
    retry_delays: tuple[Duration, ...] = field(
        default=(Duration(2.0), Duration(5.0), Duration(15.0), Duration(60.0), Duration(300.0)),
        metadata=_r(*_DELAYS, items=(1, 32)))
    # while the phone's "allow contacts?" is open
    permission_retry_delays: tuple[Duration, ...] = field(
        default=(Duration(3.0), Duration(5.0), Duration(10.0), Duration(30.0)), metadata=_r(*_DELAYS, items=(1, 32)))
    # still refused this long after the first refusal: "denied", retried on reconnect or Resync only
    permission_timeout: Duration = field(default=Duration(120.0), metadata=_r(1.0, DAY))


@dataclass(frozen=True)
class MessagesConfig:
    # newest messages fetched when a phone's MAP connects ...
    fetch_count: int = field(default=50, metadata=_r(1, 1024))
    fetch_days: int = field(default=7, metadata=_r(1, 3650))  # ... from the last this many days
    # only phones that never sent a notification
    poll_interval: Duration = field(default=Duration(120.0), metadata=_r(10 * S, DAY))
    # per phone; older messages are dropped from the car
    keep_count: int = field(default=500, metadata=_r(1, 1_000_000))
    # a larger message is read up to here and marked truncated
    max_message_bytes: int = field(default=1024 * 1024, metadata=_r(4096, 16 * 1024 * 1024))
    # CreateSession (may show a prompt)
    connect_timeout: Duration = field(default=Duration(15.0), metadata=_r(100 * MS, 10 * MIN))
    obex_timeout: Duration = field(default=Duration(10.0), metadata=_r(100 * MS, 10 * MIN))  # every other obexd call
    # a transfer without progress for this long fails
    transfer_idle_timeout: Duration = field(default=Duration(15.0), metadata=_r(100 * MS, HOUR))


@dataclass(frozen=True)
class NavigationServiceConfig:
    bus_name: str = field(default="org.dashboard.Navigation", metadata=_r(1, NAME_MAX))
    path: str = field(default="/org/dashboard/Navigation", metadata=_r(1, PATH_MAX))
    interface: str = field(default="org.dashboard.Navigation1", metadata=_r(1, NAME_MAX))
    method: str = field(default="NavigateTo", metadata=_r(1, NAME_MAX))


@dataclass(frozen=True)
class NavigationConfig:
    service: NavigationServiceConfig = field(default_factory=NavigationServiceConfig)
    intent_expiry: Duration = field(default=Duration(86400.0), metadata=_r(1 * S, 365 * DAY))
    delivery_timeout: Duration = field(default=Duration(5.0), metadata=_r(100 * MS, 5 * MIN))
    # a failed delivery is retried after up to retry_base, doubling, never more than retry_max apart
    retry_base: Duration = field(default=Duration(2.0), metadata=_r(10 * MS, HOUR))
    retry_max: Duration = field(default=Duration(300.0), metadata=_r(100 * MS, DAY))
    # destinations found in messages below this are not offered
    min_confidence: float = field(default=0.0, metadata=_r(0.0, 1.0))


@dataclass(frozen=True)
class CloudTlsConfig:
    ca_file: str | None = field(default=None, metadata=_r(1, PATH_MAX))
    cert_file: str | None = field(default=None, metadata=_r(1, PATH_MAX))
    key_file: str | None = field(default=None, metadata=_r(1, PATH_MAX))


@dataclass(frozen=True)
class CloudRetryConfig:
    base_delay: Duration = field(default=Duration(1.0), metadata=_r(10 * MS, HOUR))
    max_delay: Duration = field(default=Duration(3600.0), metadata=_r(100 * MS, 7 * DAY))
    breaker_threshold: int = field(default=5, metadata=_r(1, 10_000))
    breaker_cooldown: Duration = field(default=Duration(60.0), metadata=_r(1 * S, DAY))
    # The breaker's cool-down doubles (equal jitter) from breaker_cooldown up to this; it bounds
    # how long after the backend's return a car notices (bench: fleet_recovery_drain_s).
    breaker_max_cooldown: Duration = field(default=Duration(600.0), metadata=_r(1 * S, 7 * DAY))
    # a longer Retry-After from the backend is cut to this
    max_retry_after: Duration = field(default=Duration(6 * 3600.0), metadata=_r(1 * S, 7 * DAY))


@dataclass(frozen=True)
class CloudConfig:
    enabled: bool = False
    # base URL; discovery is at <url>/.well-known/dashbridge
    url: str | None = field(default=None, metadata=_r(1, 2048))
    vehicle_id: str | None = field(default=None, metadata=_r(1, 128))
    request_timeout: Duration = field(default=Duration(10.0), metadata=_r(100 * MS, 10 * MIN))
    sync_interval: Duration = field(default=Duration(3600.0), metadata=_r(MIN, 7 * DAY))
    sync_jitter: float = field(default=0.2, metadata=_r(0.0, 0.9))  # each interval is sync_interval * U[1 - j, 1 + j]
    # first sync after start: U[0, startup_delay]
    startup_delay: Duration = field(default=Duration(30.0), metadata=_r(0, DAY))
    tls: CloudTlsConfig = field(default_factory=CloudTlsConfig)
    retry: CloudRetryConfig = field(default_factory=CloudRetryConfig)
    # kid -> base64url Ed25519 key
    trust_anchors: dict[str, str] = field(default_factory=dict, metadata=_r(1, 128, items=(0, 16)))
    clock_skew: Duration = field(default=Duration(300.0), metadata=_r(0, DAY))
    grace: Duration = field(default=Duration(30 * 86400.0), metadata=_r(0, 365 * DAY))
    # feature -> on/off offline
    offline_policy: dict[str, bool] = field(default_factory=dict, metadata=_r(items=(0, 256)))
    gated_local_features: tuple[str, ...] = field(default=(), metadata=_r(1, 64, items=(0, 16)))
    # send-to-car destinations: offered on the dashboard for the driver to accept or decline (true),
    # or queued straight to its navigation service (false: the driver chose them in the app)
    confirm_destinations: bool = False


@dataclass(frozen=True)
class CompanionConfig:
    """The driver's phone as a courier over Bluetooth LE (docs/ble-companion.md; needs ``bleak``)."""

    enabled: bool = True
    connect_timeout: Duration = field(default=Duration(10.0), metadata=_r(100 * MS, 5 * MIN))  # connect + services
    op_timeout: Duration = field(default=Duration(5.0), metadata=_r(100 * MS, 5 * MIN))  # each read/write/subscribe
    document_timeout: Duration = field(default=Duration(30.0), metadata=_r(1 * S, 10 * MIN))  # a whole document
    retry_base: Duration = field(default=Duration(2.0), metadata=_r(10 * MS, HOUR))  # a failing session's back-off
    retry_max: Duration = field(default=Duration(60.0), metadata=_r(100 * MS, DAY))


@dataclass(frozen=True)
class Config:
    buses: BusesConfig = field(default_factory=BusesConfig)
    state_directory: str = field(default="/var/lib/dashbridge", metadata=_r(1, PATH_MAX))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # < TimeoutStopSec in dashbridge.service
    stop_timeout: Duration = field(default=Duration(10.0), metadata=_r(1 * S, 5 * MIN))
    api: ApiConfig = field(default_factory=ApiConfig)
    bluetooth: BluetoothConfig = field(default_factory=BluetoothConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    contacts: ContactsConfig = field(default_factory=ContactsConfig)
    messages: MessagesConfig = field(default_factory=MessagesConfig)
    navigation: NavigationConfig = field(default_factory=NavigationConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    companion: CompanionConfig = field(default_factory=CompanionConfig)


# ---------------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------------


MAX_CONFIG_BYTES = 1024 * 1024  # a config file is a few KiB; anything this big is not one


class _Ctx(yamlload.TypedReader):
    """The file name and, per key path, the YAML node it came from (for the line in messages);
    the conversion itself is the shared typed-YAML reader's (daemon/yamlload.py).

    Messages name the file, line and key path and what was expected; they never repeat a value
    from the file (it may not be a config file at all: a symlink to a secret, say)."""

    def fail(self, node: yaml.Node | None, path: str, msg: str) -> typing.NoReturn:
        if node is None:
            node = self.at(path)
        line = node.start_mark.line + 1 if node is not None else 1
        raise ConfigError(f"{self.filename}:{line} {path or '<top>'}: {msg}")

    def other(self, node: yaml.Node, tp: Any, path: str) -> Any:
        raise TypeError(f"config type {tp!r} not supported")  # a programming error, not user input


# ---------------------------------------------------------------------------------------------
# Checks: the declared ranges of every field, then what spans several keys or needs a look outside
# ---------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MIN), ("s", S)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def check_ranges(cfg: Any, ctx: _Ctx | None = None, path: str = "") -> None:
    """Every field of ``cfg`` (a section, recursively) within its declared ``RANGE``/``ITEMS``."""
    ctx = ctx or _Ctx("<config>")
    hints = get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        sub = f"{path}.{f.name}" if path else f.name
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, ctx, sub)
        else:
            _check_value(ctx, hints[f.name], f.metadata, value, sub)


def _check_value(ctx: _Ctx, tp: Any, meta: typing.Mapping[str, Any], value: Any, path: str) -> None:
    if value is None:
        return
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
        origin = get_origin(tp)
    if origin in (tuple, dict):
        count: Range | None = meta.get(ITEMS)
        if count is not None and not count.lo <= len(value) <= count.hi:
            ctx.fail(None, path, f"expected {count.lo:g} to {count.hi:g} entries")
        if origin is tuple:
            entries = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
            item_tp = get_args(tp)[0]
        else:
            entries = [(f"{path}.{k}", v) for k, v in value.items()]
            item_tp = get_args(tp)[1]
        for item_path, item in entries:
            _check_value(ctx, item_tp, {k: v for k, v in meta.items() if k != ITEMS}, item, item_path)
        return
    rng: Range | None = meta.get(RANGE)
    if rng is None:
        return
    if isinstance(value, str):
        size = len(value.encode())
        if size < rng.lo:
            ctx.fail(None, path, "must not be empty" if rng.lo == 1 else f"expected at least {rng.lo:g} bytes")
        if size > rng.hi:
            ctx.fail(None, path, f"longer than {rng.hi:g} bytes")
        return
    if not rng.lo <= value <= rng.hi:  # also refuses NaN
        if tp is Duration:
            ctx.fail(None, path, f"expected {format_duration(rng.lo)} to {format_duration(rng.hi)}")
        ctx.fail(None, path, f"expected {rng.lo:g} to {rng.hi:g}" if tp is not int
                 else f"expected {int(rng.lo)} to {int(rng.hi)}")


def _validate(cfg: Config, ctx: _Ctx) -> None:
    check_ranges(cfg, ctx)
    m = cfg.messages
    if m.keep_count < m.fetch_count:
        ctx.fail(None, "messages.keep_count", "must not be smaller than messages.fetch_count")
    nav = cfg.navigation
    if nav.retry_max < nav.retry_base:
        ctx.fail(None, "navigation.retry_max", "must not be shorter than navigation.retry_base")
    r = cfg.cloud.retry
    if r.max_delay < r.base_delay:
        ctx.fail(None, "cloud.retry.max_delay", "must not be shorter than cloud.retry.base_delay")
    if r.breaker_max_cooldown < r.breaker_cooldown:
        ctx.fail(None, "cloud.retry.breaker_max_cooldown", "must not be shorter than cloud.retry.breaker_cooldown")
    import phonenumbers  # validated here so a typo is a config error, not silent misses

    if phonenumbers.country_code_for_region(cfg.contacts.region.upper()) == 0:
        ctx.fail(None, "contacts.region", 'expected a region code like "GB"')
    _validate_cloud(cfg.cloud, ctx)


def _validate_cloud(c: CloudConfig, ctx: _Ctx) -> None:
    for i, name in enumerate(c.gated_local_features):
        if name not in LOCAL_FEATURES:
            ctx.fail(None, f"cloud.gated_local_features[{i}]", f"expected one of {', '.join(LOCAL_FEATURES)}")
    if bool(c.tls.cert_file) != bool(c.tls.key_file):
        ctx.fail(None, "cloud.tls.key_file" if c.tls.cert_file else "cloud.tls.cert_file",
                 "cert_file and key_file go together")
    if c.trust_anchors:
        # As the cloud component loads them (with ``cryptography``), so a bad one stops us here.
        from .anchors import load_anchors

        for kid, text in c.trust_anchors.items():
            if load_anchors({kid: text})[1]:
                ctx.fail(None, f"cloud.trust_anchors.{kid}",
                         "expected the base64url encoding of a raw 32-byte Ed25519 public key")
    if not c.enabled:
        return
    if not c.url:
        ctx.fail(ctx.at("cloud.enabled"), "cloud.url", "required when cloud.enabled is true")
    parts = urllib.parse.urlsplit(c.url)
    if parts.scheme != "https" or not parts.hostname:
        ctx.fail(None, "cloud.url", "expected an https:// URL with a host")
    if not c.vehicle_id:
        ctx.fail(ctx.at("cloud.enabled"), "cloud.vehicle_id", "required when cloud.enabled is true")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(c.tls, key)
        if path is None:
            continue
        if not os.path.isabs(path):
            ctx.fail(None, f"cloud.tls.{key}", "expected an absolute path")
        problem = _unreadable(path)
        if problem:
            ctx.fail(None, f"cloud.tls.{key}", problem)


def _unreadable(path: str) -> str | None:
    """Why the daemon could not read this file (it is not opened if it is not a regular file)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "the file is not a regular file"
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return f"the file cannot be read ({exc.strerror})"
    os.close(fd)
    return None


def loads(text: str, filename: str = "<config>") -> Config:
    ctx = _Ctx(filename)
    try:
        node = yamlload.compose(text)
    except yamlload.SyntaxProblem as exc:
        raise ConfigError(f"{filename}:{exc.line or 1} <top>: not valid YAML ({exc.quiet()})") from None
    except RecursionError:
        raise ConfigError(f"{filename}:1 <top>: not valid YAML (nested too deeply)") from None
    if node is not None:
        ctx.nodes[""] = node
    cfg = Config() if node is None else ctx.section(node, Config, "")
    _validate(cfg, ctx)
    return cfg


def read_config_file(path: Path) -> str:
    """The text of a config file: a regular file (a symlink to one is fine) of at most
    ``MAX_CONFIG_BYTES``.  A FIFO, a device or a directory is refused without blocking."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # not even opened: opening a device may act
            raise ConfigError(f"{path}: not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)  # what was opened, should the path have changed since
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


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
        cfg = loads(read_config_file(p), str(p))
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
