"""Run a test module against every BlueZ release the fake emulates (5.66 and current).

``from .bluez_versions import bluez_version  # noqa: F401`` in a module makes each of its tests run
once per release: the autouse fixture sets ``$DASHBRIDGE_SIM_BLUEZ_VERSION``, which every
:class:`~simulator.bluez.FakeBluez` started without an explicit ``version=`` reads.  Outside these
modules the variable (default ``current``) chooses the release for a whole run:
``DASHBRIDGE_SIM_BLUEZ_VERSION=5.66 make test``.
"""

from __future__ import annotations

import pytest

from dashbridge.simulator.bluez.model import SUPPORTED_VERSIONS, VERSION_ENV


@pytest.fixture(params=SUPPORTED_VERSIONS, autouse=True, ids=[f"bluez-{v}" for v in SUPPORTED_VERSIONS])
def bluez_version(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(VERSION_ENV, request.param)
    return str(request.param)
