"""The cloud component: builds the engine from config, exports ``org.dashbridge.Cloud1`` and runs
the engine once the daemon is READY.

Start-up cost is kept off the path to READY: the engine is built from SQLite (a few small reads);
aiohttp and ``cryptography`` are imported in a worker thread when :meth:`run` starts.  With
``cloud.enabled: false`` (the default) nothing is built and the component reports "disabled".

The cloud must never disturb local features: a bad TLS/key file or an unexpected error in the
engine raises out of :meth:`run`, and the daemon's supervisor restarts the component on the
cloud's own ladder (:data:`RESTART_POLICY`: full jitter, 1 s doubling, capped at 5 min, reset after
60 s of good running; health ``down`` with the reason meanwhile).  The policy is not ``critical``:
a cloud crash loop never withholds the systemd watchdog, so it cannot get the daemon restarted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ... import version
from ..backoff import Backoff
from ..clock import Clock, OffsetClock, RealClock
from ..config import LOCAL_FEATURES, CloudConfig
from ..context import AppContext
from ..events import CloudBackendChanged, CloudEvent
from ..supervisor import RestartPolicy

if TYPE_CHECKING:
    from ..services import NavigationSink
    from .engine import CloudEngine, EngineSettings
    from .transport import Transport

log = logging.getLogger(__name__)

TEST_CLOCK_ENV = "DASHBRIDGE_CLOUD_TEST_CLOCK"
# After a configuration problem (unreadable certificate: the files may be provisioned later) or an
# unexpected engine error, the supervisor restarts the component on this ladder.
RESTART_BASE_S = 1.0
RESTART_CAP_S = 300.0
RESTART_POLICY = RestartPolicy(Backoff(RESTART_BASE_S, RESTART_CAP_S, "full"), critical=False)
# How long a lease relayed by the phone waits for the engine to load its trust anchors at start.
RELAYED_LEASE_WAIT_S = 10.0


class CloudSetupError(Exception):
    """The TLS context could not be built from ``cloud.tls`` (the supervisor retries)."""


def settings_from_config(cfg: CloudConfig) -> EngineSettings:
    from .engine import EngineSettings

    r = cfg.retry
    return EngineSettings(
        vehicle_id=cfg.vehicle_id or "",
        base_url=cfg.url or "",
        request_timeout=cfg.request_timeout,
        sync_interval=cfg.sync_interval,
        sync_jitter=cfg.sync_jitter,
        startup_delay=cfg.startup_delay,
        retry=Backoff(r.base_delay, r.max_delay),
        breaker_threshold=r.breaker_threshold,
        breaker_cooldown=Backoff(r.breaker_cooldown, max(r.breaker_cooldown, r.breaker_max_cooldown), "equal"),
        max_retry_after=r.max_retry_after,
        clock_skew=cfg.clock_skew,
        grace=cfg.grace,
        offline_policy=dict(cfg.offline_policy),
        gated_local=tuple(cfg.gated_local_features),
        software_version=version(),
        confirm_destinations=cfg.confirm_destinations,
    )


class CloudComponent:
    name = "cloud"
    restart_policy = RESTART_POLICY

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.cloud
        self.test_clock = os.environ.get(TEST_CLOCK_ENV) == "1"
        self.clock: Clock = OffsetClock() if self.test_clock else RealClock()
        self.engine: CloudEngine | None = None
        self.broken = ""  # why an enabled cloud could not be built (then it runs as disabled)
        self._attached = asyncio.Event()  # the engine has its trust anchors (relayed leases wait for it)
        if self.cfg.enabled:
            # Only an enabled cloud pays for its modules at start-up (a disabled one imports
            # nothing but this file and its D-Bus interface).
            from .engine import CloudEngine
            from .outbox import CloudDb

            try:
                self.engine = CloudEngine(settings_from_config(self.cfg), CloudDb(ctx.store.conn), self.clock,
                                          random.Random(), navigation=self._navigation)
            except Exception as exc:  # never let the cloud stop the daemon from starting
                log.exception("cloud: cannot start (%s); running without the cloud", exc)
                self.broken = f"cannot start: {type(exc).__name__}: {exc}"[:200]
            else:
                self.engine.subscribe(self._health_from_engine)

    # -- services for other components ------------------------------------------------------------
    def feature_enabled(self, name: str) -> bool:
        """Is a feature on right now?  Local phone features are on unless config gates them."""
        if self.engine is not None:
            st = self.engine.feature(name)
            if st is not None:
                return st.enabled
        return self.disabled_features().get(name, [False])[0] is True

    def feature_reason(self, name: str) -> str:
        if self.engine is not None:
            st = self.engine.feature(name)
            if st is not None:
                return st.reason
        return str(self.disabled_features().get(name, [False, "", "not a feature this car knows"])[2])

    def disabled_features(self) -> dict[str, list[Any]]:
        """Features when the cloud is disabled: local ones on (unless gated), the rest by policy."""
        out: dict[str, list[Any]] = {}
        policy: Mapping[str, bool] = self.cfg.offline_policy
        for name in sorted(set(LOCAL_FEATURES) | set(policy)):
            if name in LOCAL_FEATURES and name not in self.cfg.gated_local_features:
                out[name] = [True, "local", "local phone feature; the cloud never gates it"]
            elif name in policy:
                out[name] = [policy[name], "offline-policy",
                             f"the cloud is disabled; offline policy says {'on' if policy[name] else 'off'}"]
            else:
                out[name] = [False, "offline-policy", "the cloud is disabled; offline policy does not list it"]
        return out

    def destination_event(self, source_ref: str, intent_id: str, event: str) -> None:
        """services.DestinationFeedback (from the navigation relay): acknowledged to the backend."""
        if self.engine is not None:
            self.engine.destination_event(source_ref, intent_id, event)

    async def take_relayed_lease(self, jws: str, *, courier: str) -> tuple[str, str]:
        """services.RelayedLeases: a lease the driver's phone brought, verified like the backend's."""
        if self.engine is None:
            return "ignored", "the cloud is disabled: this car uses no entitlement leases"
        try:
            async with asyncio.timeout(RELAYED_LEASE_WAIT_S):
                await self._attached.wait()
        except TimeoutError:
            return "later", "the cloud is still starting"
        return self.engine.take_relayed(jws, courier)

    def _navigation(self) -> NavigationSink | None:
        return self.ctx.services.navigation

    def advance_clock(self, seconds: float) -> float:
        assert isinstance(self.clock, OffsetClock)
        return self.clock.advance(seconds)

    def _health_from_engine(self, ev: CloudEvent) -> None:
        if not isinstance(ev, CloudBackendChanged):
            return
        state, reason = ev.state, ev.reason
        if state in ("online", "unknown"):
            self.ctx.health.set(self.name, "ok", f"backend {state}")
        else:
            # Coarse on purpose: health changes reach systemd (STATUS=) and every Daemon1 client,
            # so the "next try after ..." part of the reason stays in Cloud1.BackendReason.
            self.ctx.health.set(self.name, "degraded", f"backend {state}: {reason.split(';')[0]}"[:200])

    # -- run ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        engine = self.engine
        if engine is None:
            if self.broken:
                self.ctx.health.set(self.name, "down", self.broken)
            else:
                self.ctx.health.set(self.name, "ok", "disabled")
            return  # nothing to do, ever: no task, no wake-ups
        try:
            transport, anchors, problems = await asyncio.to_thread(self._prepare)
        except (OSError, ValueError) as exc:
            raise CloudSetupError(f"cannot set up TLS from cloud.tls ({exc})"[:200]) from exc
        try:
            for p in problems:
                log.error("cloud: %s", p)
            if not anchors:
                self.ctx.health.set(self.name, "degraded", "no usable trust anchors: entitlements cannot be verified")
            else:
                self.ctx.health.set(self.name, "ok", f"backend {engine.backend_state}")
            engine.attach(transport, anchors)
            self._attached.set()
            try:
                await engine.run()
            except Exception:  # a bug: keep its traceback, then the supervisor restarts us
                log.exception("cloud engine failed")
                raise
        finally:
            await _close(transport)

    def _prepare(self) -> tuple[Transport, dict[str, Any], list[str]]:
        """In a worker thread: the heavy imports, TLS context, trust anchors."""
        from .entitlements import load_anchors
        from .https import AiohttpTransport, make_ssl_context

        tls = self.cfg.tls
        ctx = make_ssl_context(tls.ca_file, tls.cert_file, tls.key_file)
        anchors, problems = load_anchors(self.cfg.trust_anchors)
        return AiohttpTransport(ctx, f"dashbridge/{version()}"), dict(anchors), problems


async def _close(transport: Transport) -> None:
    try:
        async with asyncio.timeout(2.0):
            await transport.close()
    except Exception as exc:  # closing is best effort
        log.debug("cloud: closing the HTTP client: %s", exc)
