"""Shared plumbing for the exported ``org.dashbridge.*`` interfaces.

Interfaces are thin: validate, delegate to the domain, map errors.  ``api_call`` turns our domain
errors into stable D-Bus error names and any unexpected exception into
``org.dashbridge.Error.Internal`` (logged here, never a traceback to the caller).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from dbus_fast import DBusError

from dashbridge.profiles.limits import MAX_ERROR, clip

from ..dbus import names
from ..dbus.errors import BusError, CallTimeout, ServiceGone
from ..errors import DashbridgeError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def to_dbus_error(exc: BaseException) -> DBusError:
    if isinstance(exc, DBusError):
        return exc
    if isinstance(exc, DashbridgeError):  # a message quoting a caller's argument stays short
        return DBusError(f"org.dashbridge.Error.{exc.code}", clip(exc.message, MAX_ERROR))
    if isinstance(exc, CallTimeout):
        return DBusError(names.DB_ERR_TIMEOUT, "a service the car depends on did not answer in time")
    if isinstance(exc, ServiceGone):
        return DBusError(names.DB_ERR_NOT_READY, "a service the car depends on is not running")
    if isinstance(exc, BusError):
        return DBusError(names.DB_ERR_FAILED, clip(exc.text or exc.name, MAX_ERROR))
    log.error("internal error in API call", exc_info=exc)
    return DBusError(names.DB_ERR_INTERNAL, "internal error (see the daemon's log)")


def api_call(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Wrap an async ``@dbus_method`` body (apply below ``@dbus_method()``)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            raise to_dbus_error(exc) from None

    return wrapper


def api_call_sync(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise to_dbus_error(exc) from None

    return wrapper


def opt(value: Any, default: Any) -> Any:
    """Empty string / zero from D-Bus means "not given" in our API."""
    return value if value else default
