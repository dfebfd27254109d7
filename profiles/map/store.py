"""Messages per phone in SQLite (``daemon/schema/0004_messages.sql``)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from dashbridge.daemon.store import Store

from .message import StoredMessage

_COLS = ("phone, handle, folder, type, direction, sender, sender_name, recipient, subject, body, body_state, "
         "problems, attachments, received, size, read")


def _row(r: tuple[Any, ...]) -> StoredMessage:
    try:
        problems = tuple(str(p) for p in json.loads(r[11] or "[]"))
    except (ValueError, TypeError):
        problems = ()
    try:
        atts = tuple(a for a in json.loads(r[12] or "[]") if isinstance(a, dict))
    except (ValueError, TypeError):
        atts = ()
    return StoredMessage(phone=r[0], handle=r[1], folder=r[2], type=r[3], direction=r[4], sender=r[5],
                         sender_name=r[6], recipient=r[7], subject=r[8], body=r[9], body_state=r[10],
                         problems=problems, attachments=atts, received=r[13], size=int(r[14] or 0),
                         read=bool(r[15]))


class MessageStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, phone: str, handle: str) -> StoredMessage | None:
        r = self.store.execute(f"SELECT {_COLS} FROM messages WHERE phone = ? AND handle = ?",
                               (phone, handle)).fetchone()
        return _row(r) if r else None

    def has_body(self, phone: str, handle: str) -> bool:
        r = self.store.execute("SELECT body IS NOT NULL FROM messages WHERE phone = ? AND handle = ?",
                               (phone, handle)).fetchone()
        return bool(r and r[0])

    def known_handles(self, phone: str) -> set[str]:
        return {r[0] for r in self.store.execute(
            "SELECT handle FROM messages WHERE phone = ? AND body IS NOT NULL", (phone,))}

    def put(self, m: StoredMessage, *, keep: int) -> bool:
        """Insert or replace; prunes the phone's oldest beyond ``keep``.  False if the phone is not
        registered (the pairing component owns the phones table; nothing is stored then)."""
        try:
            with self.store.transaction() as db:
                db.execute(
                    f"INSERT OR REPLACE INTO messages ({_COLS}, stored_at) VALUES "
                    f"(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (m.phone, m.handle, m.folder, m.type, m.direction, m.sender, m.sender_name, m.recipient,
                     m.subject, m.body, m.body_state, json.dumps(list(m.problems)), json.dumps(list(m.attachments)),
                     m.received, m.size, int(m.read), time.time()))
                db.execute(
                    "DELETE FROM messages WHERE phone = ? AND handle NOT IN (SELECT handle FROM messages WHERE "
                    "phone = ? ORDER BY received DESC, stored_at DESC LIMIT ?)", (m.phone, m.phone, keep))
        except sqlite3.IntegrityError:
            return False
        return True

    def set_read(self, phone: str, handle: str, read: bool) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE messages SET read = ? WHERE phone = ? AND handle = ?", (int(read), phone, handle))

    def set_folder(self, phone: str, handle: str, folder: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE messages SET folder = ? WHERE phone = ? AND handle = ?", (folder, phone, handle))

    def delete(self, phone: str, handle: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM messages WHERE phone = ? AND handle = ?", (phone, handle))

    def forget_phone(self, phone: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM messages WHERE phone = ?", (phone,))
            db.execute("DELETE FROM map_phones WHERE phone = ?", (phone,))

    def list(self, *, phone: str = "", folder: str = "", type: str = "", unread_only: bool = False,
             offset: int = 0, limit: int = 50) -> list[StoredMessage]:
        where: list[str] = []
        args: list[object] = []
        if phone:
            where.append("phone = ?")
            args.append(phone)
        if folder:
            where.append("folder = ?")
            args.append(folder)
        if type:
            where.append("type = ?")
            args.append(type)
        if unread_only:
            where.append("read = 0")
        sql = f"SELECT {_COLS} FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received DESC, stored_at DESC LIMIT ? OFFSET ?"
        args += [limit, offset]
        return [_row(r) for r in self.store.execute(sql, tuple(args))]

    def notifies(self, phone: str) -> bool:
        r = self.store.execute("SELECT notifies FROM map_phones WHERE phone = ?", (phone,)).fetchone()
        return bool(r and r[0])

    def set_notifies(self, phone: str) -> None:
        try:
            with self.store.transaction() as db:
                db.execute("INSERT INTO map_phones (phone, notifies) VALUES (?, 1) ON CONFLICT(phone) DO UPDATE "
                           "SET notifies = 1", (phone,))
        except sqlite3.IntegrityError:
            pass

    def synced(self, phone: str) -> None:
        try:
            with self.store.transaction() as db:
                db.execute("INSERT INTO map_phones (phone, last_sync) VALUES (?, ?) ON CONFLICT(phone) DO UPDATE "
                           "SET last_sync = excluded.last_sync", (phone, time.time()))
        except sqlite3.IntegrityError:
            pass
