"""Config: the example file is valid and complete; errors name file, line and key path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from daemon import config

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
        ("cloud:\n  retry:\n    max_delay: fast\n", 'x.yaml:3 cloud.retry.max_delay: expected a duration like "30s", got "fast"'),
        ("bluetooth:\n  max_connected: two\n", "x.yaml:2 bluetooth.max_connected: expected a whole number"),
        ("bluetooth:\n  agent_capability: Telepathy\n", "x.yaml:2 bluetooth.agent_capability: expected one of"),
        ("contacts:\n  wipe_on_disconnect: sometimes\n", "x.yaml:2 contacts.wipe_on_disconnect: expected true or false"),
        ("api:\n  allowed_groups: dashboard\n", "x.yaml:2 api.allowed_groups: expected a list"),
        ("bluetooth: [1, 2]\n", "x.yaml:1 bluetooth: expected a mapping"),
        ("nope: 1\n", "x.yaml:1 nope: unknown key"),
        ("bluetooth:\n  alias: a\n  alias: b\n", "x.yaml:3 bluetooth.alias: given twice"),
        ("bluetooth:\n  max_connected: 9\n", "x.yaml bluetooth.max_connected: expected 1 to 7, got 9"),
        ("cloud:\n  enabled: true\n", "x.yaml cloud.url: required when cloud.enabled is true"),
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
