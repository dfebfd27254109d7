"""Typed errors for D-Bus calls, and the one function that maps error names onto them."""

from __future__ import annotations

from . import names


class BusError(Exception):
    """A D-Bus call failed.  ``name`` is the D-Bus error name, ``text`` its message."""

    def __init__(self, name: str, text: str = "", *, member: str = "") -> None:
        self.name = name
        self.text = text
        self.member = member
        super().__init__(f"{member + ': ' if member else ''}{name}: {text}" if text else f"{name}")


class CallTimeout(BusError):
    """The peer did not answer within our deadline."""


class ServiceGone(BusError):
    """The destination is not on the bus (or left during the call)."""


class NotReady(BusError):
    pass


class InProgress(BusError):
    pass


class AlreadyExists(BusError):
    pass


class DoesNotExist(BusError):
    pass


class InvalidArguments(BusError):
    pass


class NotPermitted(BusError):
    pass


class Forbidden(BusError):
    """obexd's ``Forbidden``: for PBAP usually the phone's permission prompt is still open."""


class AuthenticationError(BusError):
    pass


class Rejected(BusError):
    pass


class NotImplementedOnPeer(BusError):
    pass


class Failed(BusError):
    pass


class AccessDenied(BusError):
    pass


_BY_SUFFIX: dict[str, type[BusError]] = {
    "NotReady": NotReady,
    "InProgress": InProgress,
    "AlreadyExists": AlreadyExists,
    "DoesNotExist": DoesNotExist,
    "InvalidArguments": InvalidArguments,
    "InvalidArgs": InvalidArguments,
    "InvalidFormat": InvalidArguments,
    "NotPermitted": NotPermitted,
    "NotAuthorized": NotPermitted,
    "Forbidden": Forbidden,
    "AuthenticationFailed": AuthenticationError,
    "AuthenticationCanceled": AuthenticationError,
    "AuthenticationRejected": AuthenticationError,
    "AuthenticationTimeout": AuthenticationError,
    "Rejected": Rejected,
    "Canceled": Rejected,
    "NotImplemented": NotImplementedOnPeer,
    "NotSupported": NotImplementedOnPeer,
    "Failed": Failed,
    "AccessDenied": AccessDenied,
}

_GONE = {
    names.ERR_SERVICE_UNKNOWN,
    names.ERR_NAME_HAS_NO_OWNER,
    names.ERR_UNKNOWN_OBJECT,
    names.ERR_DISCONNECTED,
}


def map_error(name: str, text: str = "", member: str = "") -> BusError:
    """Turn a D-Bus error name into one of our typed errors."""
    if name in _GONE:
        return ServiceGone(name, text, member=member)
    if name in (names.ERR_NO_REPLY, names.ERR_TIMEOUT):
        return CallTimeout(name, text, member=member)
    suffix = name.rsplit(".", 1)[-1]
    cls = _BY_SUFFIX.get(suffix, BusError)
    return cls(name, text, member=member)
