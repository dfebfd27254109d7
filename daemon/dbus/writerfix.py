"""Fix for dbus-fast's asyncio writer treating a full socket as a fatal error.

dbus-fast 5.x (``dbus_fast.aio.message_bus._MessageWriter.write_callback``) sends with a
non-blocking ``sock.send``; when a burst of outgoing messages fills the socket buffer,
``send`` raises ``BlockingIOError`` and the catch-all ``except Exception`` hands it to
``bus._finalize()``, which tears the whole connection down (and every pending message is lost).
A full socket is not an error: the right reaction is to keep the unsent remainder and wait until
the socket is writable again, which is exactly what the partial-write path already does.

This module swaps in a ``write_callback`` that does that, and nothing else.  It is applied only
to dbus-fast versions whose writer has the shape we checked (same attributes, same callback
name), so an upstream release that changes the writer (or fixes it) is left alone.  The
regression test is ``tests/bus/test_signal_burst.py``.  Upstreamable as: "aio: treat
BlockingIOError/InterruptedError in _MessageWriter.write_callback as would-block".
"""

from __future__ import annotations

import array
import logging
import socket
from typing import Any

log = logging.getLogger(__name__)

# Versions checked by reading their aio/message_bus.py; raise the ceiling after checking again.
_CHECKED_MAJOR = (5,)
_applied = False


def _write_callback(self: Any, remove_writer: bool = True) -> None:
    """dbus-fast's loop, with would-block treated as "wait for writable"."""
    from dbus_fast.aio import message_bus as mb

    sock = self.sock
    try:
        while True:
            if self.buf is None:
                if not self.messages:
                    if remove_writer:
                        self.loop.remove_writer(self.fd)
                    return
                buf, unix_fds, fut = self.messages.popleft()
                self.unix_fds = unix_fds
                self.buf = memoryview(buf)
                self.offset = 0
                self.fut = fut

            if self.unix_fds and self.negotiate_unix_fd:
                ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", self.unix_fds))]
                self.offset += sock.sendmsg([self.buf[self.offset :]], ancdata)
                self.unix_fds = None
            else:
                self.offset += sock.send(self.buf[self.offset :])

            if self.offset < len(self.buf):
                self._ensure_writer()
                return

            self.buf = None
            mb._future_set_result(self.fut, None)
    except (BlockingIOError, InterruptedError):
        # The socket is full: keep the remainder and resume when it is writable.
        self._ensure_writer()
        return
    except Exception as e:
        if self.bus._user_disconnect:
            mb._future_set_result(self.fut, None)
        else:
            mb._future_set_exception(self.fut, e)
        self.bus._finalize(e)


def _ensure_writer(self: Any) -> None:
    # add_writer replaces an existing registration for the fd, so this is idempotent.
    self.loop.add_writer(self.fd, self.write_callback)


def dbus_fast_version() -> str:
    # dbus_fast.__version__ is a module holding __version__ (cheaper than importlib.metadata).
    try:
        from dbus_fast.__version__ import __version__ as v
    except ImportError:
        return "0"
    return str(v)


def needs_fix() -> bool:
    from dbus_fast.aio import message_bus as mb

    writer = getattr(mb, "_MessageWriter", None)
    if writer is None or not hasattr(writer, "write_callback"):
        return False
    try:
        major = int(dbus_fast_version().split(".")[0])
    except ValueError:
        return False
    return major in _CHECKED_MAJOR and all(
        hasattr(mb, n) for n in ("_future_set_result", "_future_set_exception")
    )


def apply() -> bool:
    """Install the fix once; returns True if it is in place."""
    global _applied
    if _applied:
        return True
    if not needs_fix():
        log.info("dbus-fast %s: writer fix not applied (unchecked version)", dbus_fast_version())
        return False
    from dbus_fast.aio import message_bus as mb

    mb._MessageWriter.write_callback = _write_callback  # type: ignore[method-assign]
    mb._MessageWriter._ensure_writer = _ensure_writer  # type: ignore[attr-defined]
    _applied = True
    return True
