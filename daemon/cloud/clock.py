"""Re-export of :mod:`daemon.clock` (the one clock module) for ``cloud/client.py``'s relative import."""

from ..clock import Clock, OffsetClock, RealClock, SimClock, Wake

__all__ = ["Clock", "OffsetClock", "RealClock", "SimClock", "Wake"]
