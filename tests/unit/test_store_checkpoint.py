"""WAL checkpoints off the event loop (issue 18): a commit that leaves a big WAL returns before its
data is copied into the database file (the copy and its disk sync are what a checkpoint waits for);
the store's checkpoint thread copies it, while the committing thread goes on.  Real SQLite files.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from dashbridge.daemon import store as store_mod
from dashbridge.daemon.store import Store

PAYLOAD = 64 * 1024


def _fill(store: Store, rows: int) -> None:
    with store.transaction() as db:
        db.execute("CREATE TABLE IF NOT EXISTS bulk(id INTEGER PRIMARY KEY, data BLOB)")
        db.executemany("INSERT INTO bulk(data) VALUES (?)", [(os.urandom(PAYLOAD),) for _ in range(rows)])


def test_a_big_commit_returns_before_the_checkpoint_and_the_thread_does_it(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "state.sqlite3"
    store = Store(db)
    try:
        # Hold the checkpoint thread back until the commit has returned: what the commit itself did
        # shows in the database file's size.
        gate = threading.Event()
        ran_on: list[int] = []
        real_run = store_mod._Checkpointer._run

        def gated_run(self: store_mod._Checkpointer) -> None:
            gate.wait(10)
            ran_on.append(threading.get_ident())
            real_run(self)

        monkeypatch.setattr(store_mod._Checkpointer, "_run", gated_run)
        before = db.stat().st_size
        _fill(store, 160)  # ~10 MB of WAL: past CHECKPOINT_PAGES, short of the fallback
        wal = Path(str(db) + "-wal").stat().st_size
        assert wal > store.checkpoint_at
        assert db.stat().st_size == before, "the commit copied the WAL into the database itself"
        gate.set()
        assert store.wait_checkpointed(10)
        assert db.stat().st_size > before + 150 * PAYLOAD, "the checkpoint thread did not copy the WAL"
        assert ran_on and ran_on[0] != threading.get_ident()
        # Every frame is in the database now: a checkpoint has nothing left to copy.
        busy, log, done = store.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, log) == (0, done)
        assert store.execute("SELECT COUNT(*) FROM bulk").fetchone()[0] == 160
    finally:
        store.close()
    # The data is all there for the next start (and the WAL was folded in on close).
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM bulk").fetchone()[0] == 160
    finally:
        conn.close()


def test_small_commits_wake_nothing_and_close_stops_the_thread(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite3")
    try:
        with store.transaction() as db:
            db.execute("INSERT INTO meta(key, value) VALUES ('k', 'v')")
        assert store._checkpointer is None
        _fill(store, 80)
        checkpointer = store._checkpointer
        assert checkpointer is not None
        assert store.wait_checkpointed(10)
        assert checkpointer.runs >= 1
    finally:
        store.close()
    assert not checkpointer._thread.is_alive()


def test_a_reader_in_the_way_does_not_hold_the_checkpoint_and_the_next_one_catches_up(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    store = Store(db)
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        _fill(store, 80)
        assert store.wait_checkpointed(10)
        # A reader holding an old snapshot: PASSIVE copies what it may and never waits for it.
        blocker.execute("BEGIN")
        blocker.execute("SELECT COUNT(*) FROM meta").fetchone()
        _fill(store, 80)
        assert store.wait_checkpointed(10), "a checkpoint blocked behind a reader"
        blocker.execute("COMMIT")
        _fill(store, 80)
        assert store.wait_checkpointed(10)
        busy, log, done = store.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and log == done
    finally:
        blocker.close()
        store.close()
