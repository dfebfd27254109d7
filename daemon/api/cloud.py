"""``org.dashbridge.Cloud1`` at ``/org/dashbridge``: the backend connection, registration, account
link, entitlements (every feature with its source and reason) and the outbox.

Thin: validate, delegate to the cloud component's engine (ports :class:`~daemon.api.ports.CloudPort`,
:class:`~daemon.api.ports.CloudTestClockPort`), map errors.  Nothing here waits on
the network: Register/LinkAccount/SetConsent commit to the outbox and return; SyncNow schedules.
Properties change with ``PropertiesChanged``; feature and state changes also have their own
signals (docs/api/Cloud1.md).
"""

# No "from __future__ import annotations": dbus-fast reads these annotations at run time, and a
# postponed "None" return annotation is not understood by it.
from typing import TYPE_CHECKING, Annotated, Any, assert_never

from dbus_fast.annotations import (
    DBusBool,
    DBusDouble,
    DBusInt64,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from ..dbus import names
from ..errors import InvalidInput, NotReadyError
from ..events import (
    CloudBackendChanged,
    CloudDocumentRejected,
    CloudEvent,
    CloudFeatureChanged,
    CloudLinkChanged,
    CloudRegistrationChanged,
    CloudStateChanged,
    CloudSyncFinished,
)
from .base import api_call_sync

if TYPE_CHECKING:
    from .ports import CloudEnginePort, CloudPort, CloudTestClockPort

FeatureMap = Annotated[dict[str, list[Any]], DBusSignature("a{s(bss)}")]
ConsentMap = Annotated[dict[str, bool], DBusSignature("a{sb}")]
LinkCodeT = Annotated[list[Any], DBusSignature("(ssx)")]
Rejection = Annotated[list[Any], DBusSignature("(sx)")]
SendToCar = Annotated[list[Any], DBusSignature("(us)")]

# Properties whose values never travel in PropertiesChanged (annotated EmitsChangedSignal=invalidates).
NEVER_BROADCAST = ("LinkCode",)
DISABLED = "the cloud is disabled (cloud.enabled is false in the config)"


class Cloud1(ServiceInterface):
    SNAPSHOT_WITHHELD = frozenset({"LinkCode"})  # never broadcast, not in Daemon1.GetSnapshot either: Get it

    def __init__(self, component: "CloudPort") -> None:
        super().__init__(names.DASHBRIDGE_CLOUD_IFACE)
        self._c = component
        self._last: dict[str, Any] = {}
        if component.engine is not None:
            component.engine.subscribe(self._event)
            self._last = self._snapshot()

    # -- engine events -> signals ---------------------------------------------------------------
    def _event(self, ev: CloudEvent) -> None:
        match ev:
            case CloudFeatureChanged(name, enabled, source, reason):
                self.FeatureChanged(name, enabled, source, reason)
            case CloudBackendChanged(state, reason):
                self.BackendStateChanged(state, reason)
            case CloudRegistrationChanged(state, reason):
                self.RegistrationChanged(state, reason)
            case CloudLinkChanged(state, reason):
                self.AccountLinkChanged(state, reason)
            case CloudDocumentRejected(reason):
                self.EntitlementsRejected(reason)
            case CloudSyncFinished(ok, reason):
                self.SyncFinished(ok, reason)
            case CloudStateChanged():
                pass
            case _:
                assert_never(ev)
        snap = self._snapshot()
        changed = {k: v for k, v in snap.items() if self._last.get(k) != v}
        self._last = snap
        # The link code alone links the car to an account at the backend: it is never broadcast.
        # Its change is announced by name only (invalidated); an authorized caller reads it.
        invalidated = [k for k in NEVER_BROADCAST if changed.pop(k, None) is not None]
        if changed or invalidated:
            self.emit_properties_changed(changed, invalidated)

    def _engine(self) -> "CloudEnginePort":
        if self._c.engine is None:
            raise NotReadyError(self._c.broken or DISABLED)
        return self._c.engine

    def _snapshot(self) -> dict[str, Any]:
        e = self._c.engine
        if e is None:
            why = self._c.broken or DISABLED
            return {
                "Enabled": False, "BackendState": "disabled", "BackendReason": why, "ApiVersion": 0,
                "Endpoint": "", "Registration": "unregistered", "RegistrationReason": why,
                "AccountLink": "unlinked", "AccountLinkReason": why, "LinkCode": ["", "", 0],
                "EntitlementsSource": "offline-policy", "EntitlementsVersion": 0, "EntitlementsNotAfter": 0,
                "GraceUntil": 0, "Features": self._c.disabled_features(), "Consents": {}, "OutboxDepth": 0,
                "LastSync": 0, "NextSync": 0, "LastRejection": ["", 0], "SendToCar": [0, ""],
            }
        client = e.client
        link = e.link
        return {
            "Enabled": True,
            "BackendState": e.backend_state,
            "BackendReason": e.backend_reason,
            "ApiVersion": client.version if client else 0,
            "Endpoint": client.discovery_url if client else "",
            "Registration": e.registration,
            "RegistrationReason": e.registration_reason,
            "AccountLink": link.state,
            "AccountLinkReason": link.reason,
            "LinkCode": [link.code, link.uri, int(link.expires_at)] if link.state == "code-shown" else ["", "", 0],
            "EntitlementsSource": e.lease.source,
            "EntitlementsVersion": e.held.version if e.held else 0,
            "EntitlementsNotAfter": int(e.lease.not_after),
            "GraceUntil": int(e.lease.grace_until),
            "Features": {k: [v.enabled, v.source, v.reason] for k, v in sorted(e.features.items())},
            "Consents": dict(sorted(e.consents.items())),
            "OutboxDepth": e.outbox.depth(),
            "LastSync": int(e.last_sync),
            "NextSync": int(max(e.next_sync, e.gate())) if e.running else 0,
            "LastRejection": [e.last_rejection[0], int(e.last_rejection[1])],
            "SendToCar": [e.pending_destinations(), e.handoff_note],
        }

    # -- methods ------------------------------------------------------------------------------------
    @dbus_method()
    @api_call_sync
    def Register(self) -> DBusStr:
        return self._engine().register()

    @dbus_method()
    @api_call_sync
    def LinkAccount(self, code: DBusStr) -> DBusStr:
        if len(code) > 64:
            raise InvalidInput("an account link code is at most 16 letters or digits")
        return self._engine().link_account(code)

    @dbus_method()
    @api_call_sync
    def SyncNow(self) -> DBusStr:
        return self._engine().sync_now()

    @dbus_method()
    @api_call_sync
    def SetConsent(self, name: DBusStr, granted: DBusBool) -> None:
        self._engine().set_consent(name, granted)

    # -- signals ------------------------------------------------------------------------------------
    @dbus_signal()
    def FeatureChanged(self, name: DBusStr, enabled: DBusBool, source: DBusStr, reason: DBusStr
                       ) -> Annotated[list[Any], DBusSignature("sbss")]:
        return [name, enabled, source, reason]

    @dbus_signal()
    def BackendStateChanged(self, state: DBusStr, reason: DBusStr) -> Annotated[list[Any], DBusSignature("ss")]:
        return [state, reason]

    @dbus_signal()
    def RegistrationChanged(self, state: DBusStr, reason: DBusStr) -> Annotated[list[Any], DBusSignature("ss")]:
        return [state, reason]

    @dbus_signal()
    def AccountLinkChanged(self, state: DBusStr, reason: DBusStr) -> Annotated[list[Any], DBusSignature("ss")]:
        return [state, reason]

    @dbus_signal()
    def EntitlementsRejected(self, reason: DBusStr) -> DBusStr:
        return reason

    @dbus_signal()
    def SyncFinished(self, ok: DBusBool, reason: DBusStr) -> Annotated[list[Any], DBusSignature("bs")]:
        return [ok, reason]

    # -- properties ---------------------------------------------------------------------------------
    def _p(self, name: str) -> Any:
        return self._snapshot()[name]

    @dbus_property(access=PropertyAccess.READ)
    def Enabled(self) -> DBusBool:
        return self._c.engine is not None

    @dbus_property(access=PropertyAccess.READ)
    def BackendState(self) -> DBusStr:
        return str(self._p("BackendState"))

    @dbus_property(access=PropertyAccess.READ)
    def BackendReason(self) -> DBusStr:
        return str(self._p("BackendReason"))

    @dbus_property(access=PropertyAccess.READ)
    def ApiVersion(self) -> DBusUInt32:
        return int(self._p("ApiVersion"))

    @dbus_property(access=PropertyAccess.READ)
    def Endpoint(self) -> DBusStr:
        return str(self._p("Endpoint"))

    @dbus_property(access=PropertyAccess.READ)
    def Registration(self) -> DBusStr:
        return str(self._p("Registration"))

    @dbus_property(access=PropertyAccess.READ)
    def RegistrationReason(self) -> DBusStr:
        return str(self._p("RegistrationReason"))

    @dbus_property(access=PropertyAccess.READ)
    def AccountLink(self) -> DBusStr:
        return str(self._p("AccountLink"))

    @dbus_property(access=PropertyAccess.READ)
    def AccountLinkReason(self) -> DBusStr:
        return str(self._p("AccountLinkReason"))

    @dbus_property(access=PropertyAccess.READ)
    def LinkCode(self) -> LinkCodeT:
        return list(self._p("LinkCode"))

    @dbus_property(access=PropertyAccess.READ)
    def EntitlementsSource(self) -> DBusStr:
        return str(self._p("EntitlementsSource"))

    @dbus_property(access=PropertyAccess.READ)
    def EntitlementsVersion(self) -> DBusUInt64:
        return int(self._p("EntitlementsVersion"))

    @dbus_property(access=PropertyAccess.READ)
    def EntitlementsNotAfter(self) -> DBusInt64:
        return int(self._p("EntitlementsNotAfter"))

    @dbus_property(access=PropertyAccess.READ)
    def GraceUntil(self) -> DBusInt64:
        return int(self._p("GraceUntil"))

    @dbus_property(access=PropertyAccess.READ)
    def Features(self) -> FeatureMap:
        return dict(self._p("Features"))

    @dbus_property(access=PropertyAccess.READ)
    def Consents(self) -> ConsentMap:
        return dict(self._p("Consents"))

    @dbus_property(access=PropertyAccess.READ)
    def OutboxDepth(self) -> DBusUInt32:
        return int(self._p("OutboxDepth"))

    @dbus_property(access=PropertyAccess.READ)
    def LastSync(self) -> DBusInt64:
        return int(self._p("LastSync"))

    @dbus_property(access=PropertyAccess.READ)
    def NextSync(self) -> DBusInt64:
        return int(self._p("NextSync"))

    @dbus_property(access=PropertyAccess.READ)
    def LastRejection(self) -> Rejection:
        return list(self._p("LastRejection"))

    @dbus_property(access=PropertyAccess.READ)
    def SendToCar(self) -> SendToCar:
        return list(self._p("SendToCar"))


class CloudTestClock1(ServiceInterface):
    """``org.dashbridge.CloudTestClock1`` — only exported when the daemon runs with
    ``DASHBRIDGE_CLOUD_TEST_CLOCK=1`` (simulated-time tests such as the 2014 replay).  Moves the
    cloud's clock forward; never present on a head unit."""

    def __init__(self, component: "CloudTestClockPort") -> None:
        super().__init__(names.DASHBRIDGE_CLOUD_TEST_CLOCK_IFACE)
        self._c = component

    @dbus_method()
    @api_call_sync
    def Advance(self, seconds: DBusDouble) -> DBusInt64:
        if not 0 <= seconds <= 366 * 86400:
            raise InvalidInput("advance by 0 to 366 days")
        return int(self._c.advance_clock(seconds))

    @dbus_property(access=PropertyAccess.READ)
    def Now(self) -> DBusDouble:
        return float(self._c.clock.now())
