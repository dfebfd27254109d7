"""The bluetooth section of the config: defaults match the issue, bad values name the key."""

from __future__ import annotations

import pytest

from dashbridge.daemon.config import ConfigError, loads


def test_defaults() -> None:
    b = loads("").bluetooth
    assert (b.agent_capability, b.max_connected, b.connect_budget, b.first_connect_attempts) == (
        "DisplayYesNo", 2, 8.0, 3)
    assert b.pair_timeout > 60.0  # longer than bluetoothd's own agent timeout
    assert b.prompt_timeout < 60.0  # the daemon answers before bluetoothd gives up


@pytest.mark.parametrize(("text", "message"), [
    ("bluetooth:\n  prompt_timeout: 0s\n", "c.yaml:2 bluetooth.prompt_timeout: expected 100ms to 10m"),
    ("bluetooth:\n  connect_budget: 0s\n", "c.yaml:2 bluetooth.connect_budget: expected 100ms to 10m"),
    ("bluetooth:\n  first_connect_attempts: 0\n", "c.yaml:2 bluetooth.first_connect_attempts: expected 1 to 10"),
    ("bluetooth:\n  agent_capability: Telepathy\n", "c.yaml:2 bluetooth.agent_capability: expected one of"),
    ("bluetooth:\n  max_connected: 9\n", "c.yaml:2 bluetooth.max_connected: expected 1 to 7"),
])
def test_bad_values_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(text, "c.yaml")
    assert str(err.value).startswith(message)
