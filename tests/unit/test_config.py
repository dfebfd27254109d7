"""Config: the example file is valid and complete; errors name file, line and key path."""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from dashbridge.daemon import config

EXAMPLE = Path(__file__).parents[2] / "systemd" / "config.example.yaml"


def test_example_config_loads_to_the_defaults() -> None:
    assert config.load(EXAMPLE, env={}) == config.Config()


def test_env_overrides_bus_addresses_and_state_directory() -> None:
    cfg = config.load(EXAMPLE, env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x", "STATE_DIRECTORY": "/s:/t"})
    assert cfg.buses.system == "unix:path=/x"
    assert cfg.state_directory == "/s"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cloud:\n  retry:\n    max_delay: fast\n", 'x.yaml:3 cloud.retry.max_delay: expected a duration like "30s", got a string'),
        ("bluetooth:\n  max_connected: two\n", "x.yaml:2 bluetooth.max_connected: expected a whole number"),
        ("bluetooth:\n  agent_capability: Telepathy\n", "x.yaml:2 bluetooth.agent_capability: expected one of"),
        ("contacts:\n  wipe_on_disconnect: sometimes\n", "x.yaml:2 contacts.wipe_on_disconnect: expected true or false"),
        ("api:\n  allowed_groups: dashboard\n", "x.yaml:2 api.allowed_groups: expected a list"),
        ("bluetooth: [1, 2]\n", "x.yaml:1 bluetooth: expected a mapping"),
        ("nope: 1\n", "x.yaml:1 nope: unknown key"),
        ("bluetooth:\n  alias: a\n  alias: b\n", "x.yaml:3 bluetooth.alias: given twice"),
        ("bluetooth:\n  max_connected: 9\n", "x.yaml:2 bluetooth.max_connected: expected 1 to 7"),
        ("cloud:\n  enabled: true\n", "x.yaml:2 cloud.url: required when cloud.enabled is true"),
        ("bluetooth: {alias: [}\n", "x.yaml:1 <top>: not valid YAML"),
    ],
)
def test_errors_name_line_and_key(text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as exc:
        config.loads(text, "x.yaml")
    assert str(exc.value).startswith(message), str(exc.value)


def test_config_is_frozen() -> None:
    cfg = config.loads("bluetooth:\n  alias: car\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bluetooth.alias = "x"  # type: ignore[misc]


def test_durations() -> None:
    cfg = config.loads("bluetooth:\n  pairing_window: 2m\n  prompt_timeout: 250ms\ncloud:\n  grace: 21d\n")
    assert cfg.bluetooth.pairing_window == 120.0
    assert cfg.bluetooth.prompt_timeout == 0.25
    assert cfg.cloud.grace == 21 * 86400


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(config.ConfigError, match="not UTF-8"):
        config.load(bad, env={})


# ---------------------------------------------------------------------------------------------
# Ranges: every setting declares one; config that passes the check never breaks the daemon
# ---------------------------------------------------------------------------------------------


def _leaf_fields(cls: type, path: str = "") -> list[tuple[str, Any, dataclasses.Field[Any]]]:
    out: list[tuple[str, Any, dataclasses.Field[Any]]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        sub = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out.extend(_leaf_fields(tp, sub))
        else:
            out.append((sub, tp, f))
    return out


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    return tp


def _needs_range(tp: Any) -> bool:
    return tp is not bool and typing.get_origin(tp) is not typing.Literal


def test_every_setting_declares_its_range() -> None:
    missing = []
    for path, tp, f in _leaf_fields(config.Config):
        tp = _strip_optional(tp)
        origin = typing.get_origin(tp)
        if origin in (tuple, dict):
            if config.ITEMS not in f.metadata:
                missing.append(f"{path} (entry count)")
            tp = typing.get_args(tp)[-1 if origin is dict else 0]
        if _needs_range(tp) and config.RANGE not in f.metadata:
            missing.append(path)
    assert missing == [], f"settings without a range (add metadata=_r(lo, hi)): {missing}"


def test_every_default_is_within_its_range() -> None:
    for path, _tp, f in _leaf_fields(config.Config):
        for key in (config.RANGE, config.ITEMS):
            if key in f.metadata:
                r = f.metadata[key]
                assert r.lo <= r.hi, path
    config.check_ranges(config.Config())  # raises on a default outside its own range


def _run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DASHBRIDGED), "--check-config", "--config", str(path)], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "STATE_DIRECTORY": ""})


DASHBRIDGED = Path(sys.executable).with_name("dashbridged")

# (config text, line, key path, a part of the message)
BAD = [
    ("bluetooth:\n  pairing_window: 0s\n", 2, "bluetooth.pairing_window", "expected 1s to 1h"),
    ("contacts:\n  retry_delays: [2s, 0s]\n", 2, "contacts.retry_delays[1]", "expected 100ms to 1d"),
    ("contacts:\n  retry_delays:\n    - 1s\n    - 0ms\n", 4, "contacts.retry_delays[1]", "expected 100ms"),
    ("contacts:\n  permission_retry_delays: []\n", 2, "contacts.permission_retry_delays", "expected 1 to 32 entries"),
    ("cloud:\n  sync_interval: 0s\n", 2, "cloud.sync_interval", "expected 1m to 7d"),
    ("cloud:\n  retry:\n    breaker_threshold: -1\n", 3, "cloud.retry.breaker_threshold", "expected 1 to 10000"),
    ("cloud:\n  retry:\n    base_delay: 0s\n", 3, "cloud.retry.base_delay", "expected 10ms to 1h"),
    ("cloud:\n  retry:\n    base_delay: 30m\n    max_delay: 10m\n", 4, "cloud.retry.max_delay", "must not be shorter"),
    ("bluetooth:\n  device_class: -5\n", 2, "bluetooth.device_class", "expected 0 to 16777215"),
    (f"bluetooth:\n  device_class: {10**26}\n", 2, "bluetooth.device_class", "expected 0 to 16777215"),
    ("messages:\n  poll_interval: 0s\n", 2, "messages.poll_interval", "expected 10s to 1d"),
    ("navigation:\n  retry_base: 0s\n", 2, "navigation.retry_base", "expected 10ms"),
    ("navigation:\n  min_confidence: .nan\n", 2, "navigation.min_confidence", "finite"),
    ("stop_timeout: 0s\n", 1, "stop_timeout", "expected 1s to 5m"),
    ("api:\n  call_timeout: 99999d\n", 2, "api.call_timeout", "expected 100ms to 5m"),
    ("bluetooth:\n  alias: ''\n", 2, "bluetooth.alias", "must not be empty"),
    ("bluetooth:\n  alias: " + "a" * 249 + "\n", 2, "bluetooth.alias", "longer than 248 bytes"),
    ("messages:\n  fetch_count: 100\n  keep_count: 10\n", 3, "messages.keep_count", "must not be smaller"),
    ("cloud:\n  gated_local_features: [wifi]\n", 2, "cloud.gated_local_features[0]", "expected one of calls"),
    ("cloud:\n\n  trust_anchors:\n    k1: bm90IGEga2V5\n", 4, "cloud.trust_anchors.k1", "Ed25519 public key"),
    ("cloud:\n  enabled: true\n  url: https://cloud.example\n  vehicle_id: V1\n  tls:\n"
     "    cert_file: /nonexistent/c.pem\n    key_file: /nonexistent/k.pem\n", 6, "cloud.tls.cert_file", "cannot be read"),
    ("cloud:\n  enabled: true\n  url: https://cloud.example\n  vehicle_id: V1\n  tls:\n"
     "    ca_file: relative.pem\n", 6, "cloud.tls.ca_file", "absolute path"),
    ("cloud:\n  enabled: true\n  url: http://cloud.example\n  vehicle_id: V1\n", 3, "cloud.url", "https://"),
    ("cloud:\n  enabled: true\n  url: https://cloud.example\n", 2, "cloud.vehicle_id", "required"),
]


@pytest.mark.parametrize(("text", "line", "key", "message"), BAD, ids=[b[2] for b in BAD])
def test_check_config_refuses_with_file_line_and_key(tmp_path: Path, text: str, line: int, key: str,
                                                      message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    res = _run(path)
    assert res.returncode == 78, res.stdout + res.stderr
    first = res.stderr.strip()
    assert first.startswith(f"dashbridged: {path}:{line} {key}: "), first
    assert message in first, first


@pytest.mark.parametrize("text", [
    "bluetooth:\n  pairing_window: zq9marker\n",
    "bluetooth:\n  max_connected: zq9marker\n",
    "bluetooth:\n  agent_capability: zq9marker\n",
    "contacts:\n  photos: zq9marker\n",
    "contacts:\n  region: ZQ\n",
    "navigation:\n  min_confidence: zq9marker\n",
    "api:\n  allowed_groups: zq9marker\n",
    "bluetooth: zq9marker\n",
    "zq9marker\n",
    "cloud:\n  enabled: true\n  url: http://zq9marker\n  vehicle_id: V1\n",
    "cloud:\n  trust_anchors:\n    k1: zq9marker\n",
    "cloud:\n  enabled: true\n  url: https://x.example\n  vehicle_id: V1\n  tls:\n    ca_file: /zq9marker\n",
    "bluetooth: {alias: 'zq9marker\n",
    "bluetooth:\n  alias: *zq9marker\n",
])
def test_messages_never_repeat_a_value(text: str) -> None:
    with pytest.raises(config.ConfigError) as exc:
        config.loads(text, "x.yaml")
    msg = str(exc.value).lower()
    assert "zq9marker" not in msg and "zq" not in msg.split(":", 2)[-1], msg
    assert msg.startswith("x.yaml:"), msg


def test_a_symlink_to_a_secret_is_refused_without_printing_it(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$zq9salt$zq9hashhashhash:19000:0:99999:7:::\n"
                      "daemon:*:19000:0:99999:7:::\nhunter2-zq9-password\n")
    link = tmp_path / "config.yaml"
    link.symlink_to(secret)
    res = _run(link)
    assert res.returncode == 78
    assert str(link) in res.stderr
    out = res.stdout + res.stderr
    for part in ("zq9", "hunter2", "19000", "99999", "$6$"):
        assert part not in out, out
    secret.write_text("zq9-a-secret-token-that-is-one-line")
    res = _run(link)
    assert res.returncode == 78 and "zq9" not in res.stdout + res.stderr


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    res = _run(fifo)  # would block forever in open() or read() without O_NONBLOCK and the type check
    assert time.monotonic() - t0 < 10
    assert res.returncode == 78
    assert f"{fifo}: not a regular file" in res.stderr


def test_a_directory_and_a_device_are_refused(tmp_path: Path) -> None:
    for path in (tmp_path, Path("/dev/zero")):
        res = _run(path)
        assert res.returncode == 78
        assert f"{path}: not a regular file" in res.stderr


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "config.yaml"
    big.write_text("# padding\n" * (2 * 1024 * 1024 // 10))
    res = _run(big)
    assert res.returncode == 78
    assert f"{big}: larger than {config.MAX_CONFIG_BYTES} bytes" in res.stderr
    at_cap = tmp_path / "ok.yaml"
    at_cap.write_text("log_level: info\n" + "#" * (config.MAX_CONFIG_BYTES - 17) + "\n")
    assert at_cap.stat().st_size == config.MAX_CONFIG_BYTES
    assert _run(at_cap).returncode == 0


def test_the_shipped_example_passes_the_check() -> None:
    res = _run(EXAMPLE)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "config ok"


def _anchor() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_cloud_with_readable_tls_files_and_a_good_anchor_passes(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    text = (f"cloud:\n  enabled: true\n  url: https://cloud.example\n  vehicle_id: V1\n  tls:\n"
            f"    ca_file: {tmp_path / 'ca.pem'}\n    cert_file: {tmp_path / 'cert.pem'}\n"
            f"    key_file: {tmp_path / 'key.pem'}\n  trust_anchors:\n    k1: {_anchor()}\n    k2: {_anchor()}\n")
    cfg = config.loads(text, "x.yaml")
    assert set(cfg.cloud.trust_anchors) == {"k1", "k2"}
    short = _anchor()[:-2]
    with pytest.raises(config.ConfigError, match=r"^x.yaml:11 cloud.trust_anchors.k2: "):
        config.loads(text.replace(cfg.cloud.trust_anchors["k2"], short), "x.yaml")


def test_an_unreadable_key_file_is_refused() -> None:
    """As the daemon's own user would see it: root reads any file, so as root the real
    ``dashbridged --check-config`` runs as ``nobody`` (setpriv), in a directory it may enter."""
    import shutil
    import subprocess
    import sys
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="dashbridge-keyfile-"))
    try:
        d.chmod(0o755)
        for name in ("cert.pem", "key.pem"):
            (d / name).write_text("x")
            (d / name).chmod(0o644)
        (d / "key.pem").chmod(0)
        cfg = d / "x.yaml"
        cfg.write_text(f"cloud:\n  enabled: true\n  url: https://cloud.example\n  vehicle_id: V1\n  tls:\n"
                       f"    cert_file: {d / 'cert.pem'}\n    key_file: {d / 'key.pem'}\n")
        cfg.chmod(0o644)
        if os.geteuid() != 0:
            with pytest.raises(config.ConfigError, match=r"x.yaml:7 cloud.tls.key_file: the file cannot be read"):
                config.load(cfg)
            return
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed to check this as another user"
        exe = Path(sys.executable).with_name("dashbridged")
        res = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(exe),
                              "--check-config", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 78, res.stdout + res.stderr
        assert "x.yaml:7 cloud.tls.key_file: the file cannot be read" in res.stdout + res.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
