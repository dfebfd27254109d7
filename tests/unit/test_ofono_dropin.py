"""The drop-in that restarts ofonod (oFono 1.31 aborts on non-UTF-8 text from a phone, Debian's unit
has no Restart=) ships, is well-formed and is documented in the README's deployment notes."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).parents[2]
DROPIN = ROOT / "systemd" / "ofono-restart.conf"


def test_dropin_restarts_ofono_always() -> None:
    cp = configparser.ConfigParser(strict=True, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(DROPIN.read_text())
    assert cp["Service"]["Restart"] == "always"
    assert float(cp["Service"]["RestartSec"]) <= 2
    # Enough restarts allowed that a phone repeating its bad text does not make systemd give up soon.
    assert int(cp["Unit"]["StartLimitBurst"]) >= 10


def test_readme_says_where_to_install_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "systemd/ofono-restart.conf" in readme
    assert "/etc/systemd/system/ofono.service.d/ofono-restart.conf" in readme
