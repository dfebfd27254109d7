"""SQLite state (WAL) with schema migrations by ``PRAGMA user_version``.

Migrations are the files ``daemon/schema/NNNN_name.sql``, applied in order, each in its own
transaction together with the ``user_version`` bump, so a crash mid-migration leaves the previous
version intact.  A database from a newer dashbridge is refused and left untouched; an unreadable
or corrupt file is moved aside (never deleted) and a fresh one started, with a log line.
"""

from __future__ import annotations

import logging
import re
import sqlite3
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


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    out: list[Migration] = []
    for entry in resources.files("daemon.schema").iterdir():
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

    def __init__(self, path: Path, *, upto: int | None = None) -> None:
        self.path = path
        self.conn = self._open(upto)

    # -- opening ----------------------------------------------------------------------------
    def _open(self, upto: int | None) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect_and_check()
        except NewerSchemaError:
            raise
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            log.error("state database %s is unreadable (%s); moved aside to %s, starting fresh",
                      self.path, exc, aside.name)
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    src.rename(Path(str(aside) + suffix))
            conn = self._connect_and_check()
        self._migrate(conn, upto)
        return conn

    def _connect_and_check(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
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
                raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

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

    def execute(self, sql: str, params: tuple[object, ...] | dict[str, object] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def close(self) -> None:
        self.conn.close()


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
