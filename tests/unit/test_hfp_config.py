"""The calls section of the config: defaults, durations, and nonsense refused with the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashbridge.daemon import config


def _load(tmp_path: Path, text: str) -> config.Config:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return config.load(str(p))


def test_calls_defaults_and_durations(tmp_path: Path) -> None:
    assert config.Config().calls == config.CallsConfig(ofono_timeout=config.Duration(5.0),
                                                       connect_timeout=config.Duration(15.0),
                                                       restart_grace=config.Duration(15.0))
    cfg = _load(tmp_path, "calls:\n  ofono_timeout: 750ms\n  connect_timeout: 10s\n  restart_grace: 1m\n")
    assert (cfg.calls.ofono_timeout, cfg.calls.connect_timeout, cfg.calls.restart_grace) == (0.75, 10.0, 60.0)


@pytest.mark.parametrize(("text", "key"), [
    ("calls:\n  ofono_timeout: 0s\n", "calls.ofono_timeout"),
    ("calls:\n  connect_timeout: 0\n", "calls.connect_timeout"),
    ("calls:\n  ofono_timeout: soon\n", "calls.ofono_timeout"),
    ("calls:\n  redial: true\n", "calls.redial"),
])
def test_calls_nonsense_is_refused_with_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(config.ConfigError) as exc:
        _load(tmp_path, text)
    assert key in str(exc.value)
