"""Domain errors.  The API layer maps each to a stable ``org.dashbridge.Error.<code>`` name."""

from __future__ import annotations


class DashbridgeError(Exception):
    code = "Failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DashbridgeError):
    code = "InvalidArguments"


class NotFound(DashbridgeError):
    code = "NotFound"


class NotConnected(DashbridgeError):
    code = "NotConnected"


class NotReadyError(DashbridgeError):
    code = "NotReady"


class Busy(DashbridgeError):
    code = "Busy"


class OperationFailed(DashbridgeError):
    code = "Failed"


class DeadlineExceeded(DashbridgeError):
    code = "Timeout"


class AccessDeniedError(DashbridgeError):
    code = "AccessDenied"


class NotEntitled(DashbridgeError):
    """A feature the car's entitlements (or, for a local feature listed in
    ``cloud.gated_local_features``, the offline policy) switch off right now."""

    code = "NotEntitled"
