"""SQLite state (WAL) with schema migrations by ``PRAGMA user_version``.

Migrations are the files ``daemon/schema/NNNN_name.sql``, applied in order, each in its own
transaction together with the ``user_version`` bump, so a crash mid-migration leaves the previous
version intact.  A database from a newer dashbridge is refused and left untouched.  Only real
corruption (SQLITE_CORRUPT, SQLITE_NOTADB, a failed ``quick_check``) moves the files aside (never
deleted, never over an earlier set-aside) and starts a fresh one, with a log line.  A database that
is merely unavailable -- locked by another process beyond ``busy_timeout``, a full disk, an I/O
error, a read-only directory -- raises :class:`StoreUnavailable` and is left exactly as it was.
The directory is 0700 and the files 0600 whatever the umask.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

DB_NAME = "dashbridge.sqlite3"
_MIGRATION_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class StoreError(Exception):
    pass


class NewerSchemaError(StoreError):
    """The database was written by a newer dashbridge; we refuse to touch it."""


class StoreUnavailable(StoreError):
    """The database cannot be used now (locked by another process, disk full, I/O error, read-only
    directory): nothing is moved aside or changed; the daemon exits 1 and systemd retries."""


class _Corrupt(Exception):
    """Real corruption (SQLITE_CORRUPT, SQLITE_NOTADB or a failed quick_check): moved aside."""


# Primary result codes (the low byte of an extended code).
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_UNAVAILABLE = {3, 5, 6, 7, 8, 10, 13, 14, 15, 23}  # PERM BUSY LOCKED NOMEM READONLY IOERR FULL CANTOPEN PROTOCOL AUTH
BUSY_TIMEOUT_S = 5.0
# WAL checkpoints (copying the log into the database and syncing it: the one write that waits for
# the disk) run on a thread of their own, not on the event loop: a commit that leaves the WAL over
# CHECKPOINT_PAGES pages (SQLite's own default threshold) wakes it.  SQLite's automatic
# checkpoint, which would run inside that commit on the loop, stays as the safety net only, at
# FALLBACK_PAGES (if the thread cannot keep up or a commit bypasses :meth:`Store.transaction`).
# Measured on the bench's 5,000-contact first sync: ~9 ms taken off the loop on this machine's
# disk; on a head unit's eMMC the disk sync alone takes tens of milliseconds.
CHECKPOINT_PAGES = 1000
FALLBACK_PAGES = 16384


def _code(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else -1


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    out: list[Migration] = []
    for entry in resources.files("dashbridge.daemon.schema").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if versions != list(range(1, len(out) + 1)):
        raise StoreError(f"schema migrations are not numbered 1..N: {versions}")
    return out


def latest_version() -> int:
    return len(migrations())


class Store:
    """One connection, used from the event loop thread (statements are short)."""

    def __init__(self, path: Path, *, upto: int | None = None, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.conn = self._open(upto)
        self.conn.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
        self._wal = str(self.path) + "-wal"
        # the WAL's size at CHECKPOINT_PAGES frames: its header and each frame's (page + 24 bytes)
        page_size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        self.checkpoint_at = 32 + CHECKPOINT_PAGES * (page_size + 24)
        self._checkpointer: _Checkpointer | None = None

    # -- opening ----------------------------------------------------------------------------
    def _open(self, upto: int | None) -> sqlite3.Connection:
        self._prepare_files()
        try:
            conn = self._connect_and_check()
        except _Corrupt as exc:
            aside = _move_aside(self.path)
            log.error("state database %s is corrupt (%s); moved aside to %s, starting fresh",
                      self.path, exc, aside.name)
            self._prepare_files()
            try:
                conn = self._connect_and_check()
            except _Corrupt as again:
                raise StoreUnavailable(f"state database {self.path}: a fresh database fails its check "
                                       f"({again})") from None
        try:
            self._migrate(conn, upto)
        except sqlite3.Error as exc:
            conn.close()
            if _code(exc) in _UNAVAILABLE:
                raise self._unavailable(exc) from None
            raise
        self._restrict_files()
        return conn

    def _prepare_files(self) -> None:
        """The directory 0700 and the database 0600 whatever the umask (sqlite gives ``-wal`` and
        ``-shm`` the database file's mode), existing ones included."""
        try:
            _make_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreUnavailable(f"state database {self.path}: unavailable ({exc.strerror}); "
                                   "nothing was changed") from None
        self._restrict_files()

    def _restrict_files(self) -> None:
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(str(self.path) + suffix, 0o600)

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        name = getattr(exc, "sqlite_errorname", None) or "error"
        return StoreUnavailable(f"state database {self.path}: unavailable ({exc}, {name}); "
                                "nothing was changed")

    def _connect_and_check(self) -> sqlite3.Connection:
        try:
            # timeout= is sqlite's busy_timeout: a lock held by another process is waited for this
            # long, then we give up (and systemd starts us again); never mistaken for corruption.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise self._classify(exc) from None
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            latest = latest_version()
            if version > latest:
                raise NewerSchemaError(
                    f"{self.path}: schema version {version} is newer than this dashbridge knows "
                    f"({latest}); refusing to touch it (upgrade dashbridge or restore a backup)"
                )
            row = conn.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise _Corrupt(f"quick_check: {row[0] if row else 'no answer'}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # A write that changes nothing: a read-only directory or mount, a full disk or a
            # writer holding the lock shows here, at start, not at the first real write.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"PRAGMA user_version={int(version)}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise self._classify(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _classify(self, exc: sqlite3.Error) -> Exception:
        if _code(exc) in _CORRUPT:
            return _Corrupt(str(exc))
        return self._unavailable(exc)

    def _migrate(self, conn: sqlite3.Connection, upto: int | None) -> None:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        for m in migrations():
            if m.version <= current or (upto is not None and m.version > upto):
                continue
            log.info("state database: applying migration %s", m.name)
            try:
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _split_sql(m.sql):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={m.version}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # sqlite may have rolled back already (disk full, I/O)
                    conn.execute("ROLLBACK")
                raise

    @property
    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    # -- use ----------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        self._after_commit()

    def _after_commit(self) -> None:
        """Wake the checkpoint thread when the WAL has grown past :data:`CHECKPOINT_PAGES`."""
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return
        if size >= self.checkpoint_at:
            if self._checkpointer is None:
                self._checkpointer = _Checkpointer(self.path)
            self._checkpointer.wake()

    def wait_checkpointed(self, timeout: float = 10.0) -> bool:
        """Block until no checkpoint is pending or running (tests, benchmarks); False on timeout."""
        return self._checkpointer is None or self._checkpointer.idle(timeout)

    def execute(self, sql: str, params: tuple[object, ...] | dict[str, object] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.conn.close()


class _Checkpointer:
    """A thread with its own connection that runs ``PRAGMA wal_checkpoint(PASSIVE)`` when woken.
    PASSIVE never waits for a lock (a reader or writer in the way: the frames it cannot copy yet
    are copied next time) and the sqlite3 module releases the GIL while SQLite works, so the event
    loop goes on meanwhile.  A failure is logged and the next commit tries again; SQLite's own
    checkpoint at :data:`FALLBACK_PAGES` bounds the WAL whatever happens here."""

    STOP_TIMEOUT_S = 10.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._pending = False
        self._running = False
        self._stopping = False
        self.runs = 0
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        with self._cond:
            self._pending = True
            self._cond.notify_all()

    def idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not (self._pending or self._running) or self._stopping, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(self.STOP_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("state database: the checkpoint thread did not stop within %.0f s", self.STOP_TIMEOUT_S)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._pending or self._stopping)
                    if self._stopping:
                        return
                    self._pending, self._running = False, True
                try:
                    if conn is None:
                        # timeout=0: PASSIVE takes no lock it would wait for; opening reads the schema only
                        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
                except sqlite3.Error as exc:
                    log.warning("state database: background checkpoint failed (%s); the next commit retries", exc)
                finally:
                    with self._cond:
                        self._running = False
                        self._cond.notify_all()
        finally:
            if conn is not None:
                conn.close()


def _split_sql(script: str) -> list[str]:
    """Statements of a migration file (``;`` at line end separates; no triggers with bodies)."""
    out, cur = [], []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        cur.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(cur).strip()
            if stmt.strip(";").strip():
                out.append(stmt)
            cur = []
    tail = "\n".join(cur).strip()
    if tail:
        out.append(tail)
    return out


def _make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 whatever the umask; tighten an existing one."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o7777 != 0o700:
        try:
            os.chmod(path, 0o700)
        except PermissionError:  # not ours (a shared directory): the files themselves are 0600
            log.warning("state directory %s is not 0700 and not ours to change", path)


def _move_aside(path: Path) -> Path:
    """Link the database (and its ``-wal``/``-shm``) to a name no earlier set-aside uses, then
    unlink the originals.  Never overwrites: ``os.link`` fails on an existing name, so two starts in
    the same microsecond (or a name already taken) get the next free suffix."""
    now_us = time.time_ns() // 1000
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now_us // 1_000_000)) + f".{now_us % 1_000_000:06d}"
    base = f"{path.name}.corrupt-{stamp}-{os.getpid()}"
    present = [s for s in ("", "-wal", "-shm") if os.path.lexists(str(path) + s)]
    for n in range(1000):
        aside = path.with_name(base if n == 0 else f"{base}-{n}")
        made: list[str] = []
        try:
            for s in present:
                os.link(str(path) + s, str(aside) + s, follow_symlinks=False)
                made.append(str(aside) + s)
        except FileExistsError:
            for m in made:  # our own fresh links; the originals are still in place
                os.unlink(m)
            continue
        except OSError as exc:
            for m in made:
                os.unlink(m)
            raise StoreUnavailable(f"state database {path}: corrupt, and it cannot be moved aside "
                                   f"({exc.strerror}); nothing was changed") from None
        for s in present:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(path) + s)
        return aside
    raise StoreUnavailable(f"state database {path}: corrupt, and no free name to move it aside to")
