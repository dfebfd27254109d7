"""Logging set-up and redaction.

Rule: phone numbers, names, message bodies and keys never appear at INFO or above.  Use
``redact()`` for anything personal that must be mentioned at INFO; put details at DEBUG.

A token is a keyed hash (HMAC-SHA256, truncated) under a secret generated once per install and
kept in the state directory (``KEY_FILE``, mode 0600): the same number gives the same token in
every log of this car, across restarts, but a token cannot be turned back into the number by
trying every number (as an unkeyed hash of a phone number can, in under a second) without the
key, and the same number gives unrelated tokens on two cars.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import logging
import os
import secrets
import stat
import sys
from pathlib import Path

log = logging.getLogger(__name__)

KEY_FILE = "log-redaction.key"
KEY_BYTES = 32
TOKEN_HEX = 8  # characters of the HMAC shown (4 bytes: enough to tell values apart in one log)

# Until set_up_redaction() runs (and when the state directory cannot keep a key): per process.
_key: bytes = secrets.token_bytes(KEY_BYTES)


def redact(value: str | None) -> str:
    """A short stable token for a personal value: the same number gives the same token."""
    if not value:
        return "<empty>"
    return "#" + hmac.new(_key, value.encode(), hashlib.sha256).hexdigest()[:TOKEN_HEX]


def redact_address(address: str | None) -> str:
    """Bluetooth addresses: keep the last two octets (enough to tell phones apart in a log)."""
    if not address:
        return "<none>"
    return "XX:XX:XX:XX:" + address[-5:]


def set_up_redaction(state_dir: Path) -> bool:
    """Key ``redact()`` with this install's secret, created in ``state_dir`` on first use.

    Returns False (and logs why) when the directory cannot keep one: tokens are then stable only
    within this process."""
    global _key
    try:
        _key = load_or_create_key(state_dir / KEY_FILE)
    except OSError as exc:
        _key = secrets.token_bytes(KEY_BYTES)
        log.warning("log redaction: cannot keep a key in the state directory (%s); tokens in this log "
                    "will not match those of other runs", exc.strerror or exc)
        return False
    return True


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, or a new one written there: mode 0600, published atomically (a
    temporary file, fsync'd, then hard-linked into place with link(2), which never replaces an
    existing file: two starters agree on one key, a power cut leaves no half-written one)."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except _BadKey:
        log.warning("log redaction: %s is not a key; replacing it (tokens change once)", path.name)
        _publish(path, replace=True)
        return _read_key(path)
    _publish(path, replace=False)
    return _read_key(path)


class _BadKey(Exception):
    pass


def _read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "the key file is not a regular file")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)  # someone loosened it; the key is only as secret as this file
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise _BadKey
    return data


def _publish(path: Path, *, replace: bool) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another starter won: use its key
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                if not os.path.lexists(path):  # no hard links here: rename (a start-up race aside)
                    os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # journald adds timestamps; keep lines short.
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("dbus_fast").setLevel(logging.WARNING)
