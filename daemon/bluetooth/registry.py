"""The persistent registry of paired phones (table ``phones``, schema 0002).

Priority is an order: ``priority`` 0 comes first.  Forgetting a phone deletes its row, and with it
(``ON DELETE CASCADE``) everything the other components stored about it; if bluetoothd could not be
told right away, a tombstone in ``phone_removals`` makes sure the bond is removed when it is back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhoneRecord:
    address: str
    name: str
    priority: int
    profiles: tuple[str, ...]
    paired_at: float
    last_connected: float | None
    connected_once: bool
    needs_repair: bool


def _record(row: tuple[object, ...]) -> PhoneRecord:
    address, name, priority, profiles, paired_at, last_connected, connected_once, needs_repair = row
    try:
        profs = json.loads(str(profiles))
        if not isinstance(profs, list):
            profs = []
    except ValueError:
        profs = []
    return PhoneRecord(
        address=str(address), name=str(name), priority=int(priority),  # type: ignore[call-overload]
        profiles=tuple(str(p) for p in profs), paired_at=float(paired_at),  # type: ignore[arg-type]
        last_connected=float(last_connected) if last_connected is not None else None,  # type: ignore[arg-type]
        connected_once=bool(connected_once), needs_repair=bool(needs_repair),
    )


_COLUMNS = "address, name, priority, profiles, paired_at, last_connected, connected_once, needs_repair"


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store

    def all(self) -> list[PhoneRecord]:
        """Every paired phone, best priority first (ties: paired earlier first)."""
        rows = self.store.execute(f"SELECT {_COLUMNS} FROM phones ORDER BY priority, paired_at, address")
        return [_record(r) for r in rows.fetchall()]

    def get(self, address: str) -> PhoneRecord | None:
        row = self.store.execute(f"SELECT {_COLUMNS} FROM phones WHERE address = ?", (address,)).fetchone()
        return _record(row) if row else None

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self.get(address) is not None

    def add(self, address: str, name: str, profiles: Iterable[str], *, now: float | None = None) -> PhoneRecord:
        """A newly paired phone goes last in priority; a re-paired one keeps its place."""
        now = time.time() if now is None else now
        profs = json.dumps(sorted(set(profiles)))
        with self.store.transaction() as db:
            db.execute("DELETE FROM phone_removals WHERE address = ?", (address,))
            existing = db.execute("SELECT 1 FROM phones WHERE address = ?", (address,)).fetchone()
            if existing:
                db.execute("UPDATE phones SET name = ?, profiles = ?, paired_at = ?, needs_repair = 0 "
                           "WHERE address = ?", (name, profs, now, address))
            else:
                (last,) = db.execute("SELECT COALESCE(MAX(priority), -1) FROM phones").fetchone()
                db.execute(f"INSERT INTO phones ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, 0, 0)",
                           (address, name, int(last) + 1, profs, now))
        rec = self.get(address)
        assert rec is not None
        return rec

    def update_name(self, address: str, name: str) -> bool:
        cur = self.store.execute("UPDATE phones SET name = ? WHERE address = ? AND name != ?", (name, address, name))
        return cur.rowcount > 0

    def update_profiles(self, address: str, profiles: Iterable[str]) -> bool:
        profs = json.dumps(sorted(set(profiles)))
        cur = self.store.execute("UPDATE phones SET profiles = ? WHERE address = ? AND profiles != ?",
                                 (profs, address, profs))
        return cur.rowcount > 0

    def connected(self, address: str, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.store.execute("UPDATE phones SET last_connected = ?, connected_once = 1, needs_repair = 0 "
                           "WHERE address = ?", (now, address))

    def set_needs_repair(self, address: str, value: bool) -> bool:
        cur = self.store.execute("UPDATE phones SET needs_repair = ? WHERE address = ? AND needs_repair != ?",
                                 (int(value), address, int(value)))
        return cur.rowcount > 0

    def move(self, address: str, position: int) -> list[PhoneRecord]:
        """Put ``address`` at ``position`` (0 = first) and renumber everyone 0..n-1.  Returns the
        phones whose priority changed."""
        before = {r.address: r.priority for r in self.all()}
        order = [a for a in before if a != address]
        position = max(0, min(position, len(order)))
        order.insert(position, address)
        with self.store.transaction() as db:
            for i, addr in enumerate(order):
                db.execute("UPDATE phones SET priority = ? WHERE address = ?", (i, addr))
        return [r for r in self.all() if before.get(r.address) != r.priority]

    def forget(self, address: str, *, tombstone: bool) -> bool:
        """Delete the phone and (cascade) everything stored about it; with ``tombstone`` remember to
        remove the BlueZ bond later.  True when there was a row."""
        with self.store.transaction() as db:
            cur = db.execute("DELETE FROM phones WHERE address = ?", (address,))
            if tombstone:
                db.execute("INSERT OR REPLACE INTO phone_removals (address, requested) VALUES (?, ?)",
                           (address, time.time()))
        return cur.rowcount > 0

    def removals(self) -> list[str]:
        return [str(r[0]) for r in self.store.execute("SELECT address FROM phone_removals").fetchall()]

    def removal_done(self, address: str) -> None:
        self.store.execute("DELETE FROM phone_removals WHERE address = ?", (address,))
