"""The durable outbox: every outbound cloud write is a row, committed before it is sent.

- Each item carries an idempotency key fixed at enqueue time and sent with every attempt, so a
  retry after a lost answer (or a crash after the backend acted) has no second effect.
- Enqueue commits with ``PRAGMA synchronous=FULL`` (the WAL is fsynced): a power cut right after
  the D-Bus call returned cannot lose the driver's action.  Other writes use the store's NORMAL.
- Bounded with a policy per kind (:data:`POLICIES`): a registration is never dropped or replaced;
  a newer consent for the same name replaces the queued one; acknowledgements are capped and age
  out (the backend re-offers what was not acknowledged, so nothing the driver did is lost).
- Scheduling is the caller's (the engine): ``due()``/``next_due()``/``retry()``/``release()``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

log = logging.getLogger(__name__)

_SCHEMA: list[str] | None = None  # the cloud migration's statements, for CloudDb.memory()

# Refused items are kept for diagnosis (``dashbridgectl cloud``); only the newest this many.
KEEP_REFUSED = 50


class CloudDb:
    """The cloud's view of the SQLite store: transactions (optionally durable) and a key/value table."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def memory(cls) -> CloudDb:
        """A private in-memory database with only the cloud tables (tests, the fleet bench).
        Small pages: the fleet bench holds thousands of these at once."""
        global _SCHEMA
        if _SCHEMA is None:
            from ..store import _split_sql

            sql = resources.files("dashbridge.daemon.schema").joinpath("0006_cloud.sql").read_text(encoding="utf-8")
            _SCHEMA = _split_sql(sql)
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA page_size=512")
        conn.execute("PRAGMA cache_size=16")
        for stmt in _SCHEMA:
            conn.execute(stmt)
        return cls(conn)

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        previous = None
        if durable:
            previous = conn.execute("PRAGMA synchronous").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if previous is not None:
                conn.execute(f"PRAGMA synchronous={int(previous)}")

    def get(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM cloud_state WHERE key=?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except (ValueError, RecursionError):
            log.warning("cloud state %s is damaged; using the default", key)
            return default

    @staticmethod
    def put(conn: sqlite3.Connection, key: str, value: Any) -> None:
        conn.execute("INSERT INTO cloud_state(key, value) VALUES(?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, json.dumps(value, sort_keys=True)))

    @staticmethod
    def delete(conn: sqlite3.Connection, key: str) -> None:
        conn.execute("DELETE FROM cloud_state WHERE key=?", (key,))


Coalesce = Literal["none", "keep_first", "replace"]


@dataclass(frozen=True)
class KindPolicy:
    max_items: int  # queued items of this kind
    max_age: float | None  # seconds; None: never ages out
    coalesce: Coalesce  # same kind + coalesce key: keep the queued one, or replace it
    when_full: Literal["drop_oldest", "refuse"]


POLICIES: dict[str, KindPolicy] = {
    # Never dropped, never replaced (a new key could register twice): Register while one is
    # queued returns the queued one.
    "register": KindPolicy(max_items=1, max_age=None, coalesce="keep_first", when_full="refuse"),
    # A code the driver typed; a newer one replaces it.  App codes expire within days.
    "link": KindPolicy(max_items=1, max_age=7 * 86400.0, coalesce="replace", when_full="refuse"),
    # "Show me a code": stale once the driver has walked away.
    "link_code": KindPolicy(max_items=1, max_age=3600.0, coalesce="keep_first", when_full="refuse"),
    # The newest value per consent name wins (each carries a sequence number the backend orders by).
    "consent": KindPolicy(max_items=64, max_age=None, coalesce="replace", when_full="refuse"),
    # One per (destination, state) (coalesce key "<id>|<result>"); a catch-up of a few thousand
    # destinations queues two or three each.  The backend re-offers destinations without any
    # acknowledgement, so these may age out (a lost later state is the price of a weeks-long outage).
    "destination_ack": KindPolicy(max_items=10_000, max_age=30 * 86400.0, coalesce="keep_first",
                                  when_full="drop_oldest"),
    # One per rejected entitlement document (coalesce key: its ETag); only worth sending while fresh.
    "entitlements_report": KindPolicy(max_items=8, max_age=30 * 86400.0, coalesce="keep_first",
                                      when_full="drop_oldest"),
}


class OutboxFull(Exception):
    pass


@dataclass(frozen=True)
class OutboxItem:
    id: int
    kind: str
    key: str
    coalesce_key: str
    payload: dict[str, Any]
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str


_COLS = "id, kind, idempotency_key, coalesce_key, payload, created_at, attempts, next_attempt_at, last_error"


def _item(row: tuple[Any, ...]) -> OutboxItem:
    try:
        payload = json.loads(row[4])
    except (ValueError, RecursionError):
        payload = {}
    return OutboxItem(int(row[0]), str(row[1]), str(row[2]), str(row[3]),
                      payload if isinstance(payload, dict) else {}, float(row[5]), int(row[6]),
                      float(row[7]), str(row[8]))


class Outbox:
    def __init__(self, db: CloudDb, *, on_drop: Callable[[OutboxItem, str], None] | None = None) -> None:
        self.db = db
        self.on_drop = on_drop
        # Bumped by every change of which items are queued; lets readers cache (see has()).
        self.generation = 0
        self._has_cache: dict[tuple[str, str | None], bool] = {}
        self._has_gen = -1

    # -- writing ------------------------------------------------------------------------------
    def enqueue(self, kind: str, payload: dict[str, Any], now: float, coalesce_key: str = "",
                extra: Callable[[sqlite3.Connection], None] | None = None) -> tuple[OutboxItem, bool]:
        """Commit an item durably; returns (item, created).  ``extra`` runs in the same transaction."""
        with self.db.transaction(durable=True) as conn:
            item, created = self.insert(conn, kind, payload, now, coalesce_key)
            if extra is not None:
                extra(conn)
        return item, created

    def insert(self, conn: sqlite3.Connection, kind: str, payload: dict[str, Any], now: float,
               coalesce_key: str = "", key: str | None = None) -> tuple[OutboxItem, bool]:
        """As :meth:`enqueue`, inside the caller's transaction.  ``key``: an idempotency key derived
        from what the item is (one request per fact, whoever queues it); random otherwise.  An item
        already holding that key (queued or refused) is returned instead of a second one."""
        self.generation += 1
        policy = POLICIES[kind]
        if key is not None:
            row = conn.execute(f"SELECT {_COLS} FROM outbox WHERE idempotency_key=?", (key,)).fetchone()
            if row is not None:
                return _item(row), False
        if policy.coalesce != "none":
            row = conn.execute(f"SELECT {_COLS} FROM outbox WHERE state='queued' AND kind=? AND coalesce_key=? "
                               "ORDER BY id LIMIT 1", (kind, coalesce_key)).fetchone()
            if row is not None:
                if policy.coalesce == "keep_first":
                    return _item(row), False
                conn.execute("DELETE FROM outbox WHERE id=?", (row[0],))
        count = conn.execute("SELECT COUNT(*) FROM outbox WHERE state='queued' AND kind=?", (kind,)).fetchone()[0]
        if count >= policy.max_items:
            if policy.when_full == "refuse":
                raise OutboxFull(f"{count} {kind} items already waiting")
            for row in conn.execute(f"SELECT {_COLS} FROM outbox WHERE state='queued' AND kind=? ORDER BY id "
                                    "LIMIT ?", (kind, count - policy.max_items + 1)).fetchall():
                conn.execute("DELETE FROM outbox WHERE id=?", (row[0],))
                self._dropped(conn, _item(row), "outbox full")
        key = key or uuid.uuid4().hex
        cur = conn.execute(
            "INSERT INTO outbox(kind, idempotency_key, coalesce_key, payload, created_at, next_attempt_at) "
            "VALUES(?, ?, ?, ?, ?, ?)", (kind, key, coalesce_key, json.dumps(payload, sort_keys=True), now, now))
        assert cur.lastrowid is not None
        return OutboxItem(cur.lastrowid, kind, key, coalesce_key, payload, now, 0, now, ""), True

    def complete(self, item: OutboxItem, extra: Callable[[sqlite3.Connection], None] | None = None) -> None:
        self.generation += 1
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE id=?", (item.id,))
            if extra is not None:
                extra(conn)

    # Single statements below need no explicit transaction: SQLite makes each one atomic.
    def retry(self, item: OutboxItem, error: str, next_at: float) -> None:
        self.db.conn.execute("UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt_at=? WHERE id=?",
                             (error[:300], next_at, item.id))

    def refuse(self, item: OutboxItem, error: str, extra: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """The backend will never accept it: keep it (for diagnosis) but stop sending it."""
        self.generation += 1
        with self.db.transaction() as conn:
            conn.execute("UPDATE outbox SET state='refused', attempts=attempts+1, last_error=? WHERE id=?",
                         (error[:300], item.id))
            conn.execute("DELETE FROM outbox WHERE state='refused' AND id NOT IN "
                         "(SELECT id FROM outbox WHERE state='refused' ORDER BY id DESC LIMIT ?)", (KEEP_REFUSED,))
            if extra is not None:
                extra(conn)

    def release(self, now: float) -> int:
        """Make every queued item due now (the backend came back: what waited for it goes)."""
        return self.db.conn.execute("UPDATE outbox SET next_attempt_at=? WHERE state='queued' AND next_attempt_at>?",
                                    (now, now)).rowcount

    def clamp(self, latest: float) -> None:
        """No item waits past ``latest`` (after a wall-clock jump backwards, or a lowered cap)."""
        self.db.conn.execute("UPDATE outbox SET next_attempt_at=? WHERE state='queued' AND next_attempt_at>?",
                             (latest, latest))

    def expire(self, now: float) -> list[OutboxItem]:
        dropped: list[OutboxItem] = []
        for kind, policy in POLICIES.items():
            if policy.max_age is None:
                continue
            rows = self.db.conn.execute(f"SELECT {_COLS} FROM outbox WHERE state='queued' AND kind=? AND created_at<?",
                                        (kind, now - policy.max_age)).fetchall()
            if not rows:
                continue
            with self.db.transaction() as conn:
                for row in rows:
                    conn.execute("DELETE FROM outbox WHERE id=?", (row[0],))
                    item = _item(row)
                    self._dropped(conn, item, "too old")
                    dropped.append(item)
        return dropped

    def _dropped(self, conn: sqlite3.Connection, item: OutboxItem, why: str) -> None:
        self.generation += 1
        log.warning("cloud outbox: dropped a %s item (%s; %d attempts, last error: %s)",
                    item.kind, why, item.attempts, item.last_error or "none")
        row = conn.execute("SELECT value FROM cloud_state WHERE key='outbox_dropped'").fetchone()
        counts = json.loads(row[0]) if row else {}
        counts[item.kind] = int(counts.get(item.kind, 0)) + 1
        CloudDb.put(conn, "outbox_dropped", counts)
        if self.on_drop is not None:
            self.on_drop(item, why)

    # -- reading ------------------------------------------------------------------------------
    def due(self, now: float, blocked_kinds: tuple[str, ...] = ()) -> OutboxItem | None:
        row = self.db.conn.execute(
            f"SELECT {_COLS} FROM outbox WHERE state='queued' AND next_attempt_at<=? "
            f"AND kind NOT IN ({','.join('?' * len(blocked_kinds))}) ORDER BY next_attempt_at, id LIMIT 1",
            (now, *blocked_kinds)).fetchone()
        return _item(row) if row else None

    def head(self, blocked_kinds: tuple[str, ...] = ()) -> OutboxItem | None:
        """The queued item due first (due or not), or None."""
        row = self.db.conn.execute(
            f"SELECT {_COLS} FROM outbox WHERE state='queued' "
            f"AND kind NOT IN ({','.join('?' * len(blocked_kinds))}) ORDER BY next_attempt_at, id LIMIT 1",
            blocked_kinds).fetchone()
        return _item(row) if row else None

    def next_due(self, blocked_kinds: tuple[str, ...] = ()) -> float | None:
        row = self.db.conn.execute(
            f"SELECT MIN(next_attempt_at) FROM outbox WHERE state='queued' "
            f"AND kind NOT IN ({','.join('?' * len(blocked_kinds))})", blocked_kinds).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def depth(self) -> int:
        return int(self.db.conn.execute("SELECT COUNT(*) FROM outbox WHERE state='queued'").fetchone()[0])

    def has(self, kind: str, coalesce_key: str | None = None) -> bool:
        if self._has_gen != self.generation:
            self._has_cache.clear()
            self._has_gen = self.generation
        cached = self._has_cache.get((kind, coalesce_key))
        if cached is not None:
            return cached
        if coalesce_key is None:
            row = self.db.conn.execute("SELECT 1 FROM outbox WHERE state='queued' AND kind=? LIMIT 1",
                                       (kind,)).fetchone()
        else:
            row = self.db.conn.execute("SELECT 1 FROM outbox WHERE state='queued' AND kind=? AND coalesce_key=? "
                                       "LIMIT 1", (kind, coalesce_key)).fetchone()
        self._has_cache[(kind, coalesce_key)] = row is not None
        return row is not None

    def items(self, state: str = "queued") -> list[OutboxItem]:
        return [_item(r) for r in self.db.conn.execute(
            f"SELECT {_COLS} FROM outbox WHERE state=? ORDER BY id", (state,)).fetchall()]
