"""dashbridge: a head-unit Bluetooth bridge.

The import namespace of the project.  Its parts live at the top of the repository, as the project
was laid out (``daemon/``, ``profiles/``, ``simulator/``); ``dashbridge/daemon`` and the others are
links to them, so that a checkout imports exactly what a wheel installs: ``dashbridge.daemon``,
``dashbridge.profiles`` (distribution ``dashbridge``) and ``dashbridge.simulator`` (distribution
``dashbridge-sim``, never installed on a head unit).  Nothing else goes at the top of
site-packages.
"""

from __future__ import annotations

import functools


@functools.cache
def version() -> str:
    """The one version: the installed distribution's metadata (pyproject.toml reads it from the
    file VERSION).  Asked on first use, so importing the daemon does not pay for importlib.metadata."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("dashbridge")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return version()
    raise AttributeError(name)
