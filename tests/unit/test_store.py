"""State store: migrations from every earlier schema version, atomic migrations, refusal of a
newer database, corrupt files moved aside — the local half of the 2014 lesson."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dashbridge.daemon import store as store_mod
from dashbridge.daemon.store import DB_NAME, NewerSchemaError, Store, latest_version, migrations


def _tables(conn: sqlite3.Connection) -> dict[str, str]:
    return {
        name: sql
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type IN ('table','index') "
                                      "AND name NOT LIKE 'sqlite_%'")
    }


def test_migrations_are_numbered_1_to_n() -> None:
    assert [m.version for m in migrations()] == list(range(1, latest_version() + 1))


@pytest.mark.parametrize("start", range(0, latest_version() + 1))
def test_upgrade_from_every_earlier_version_matches_a_fresh_install(tmp_path: Path, start: int) -> None:
    fresh = Store(tmp_path / "fresh" / DB_NAME)
    old = Store(tmp_path / "old" / DB_NAME, upto=start)
    assert old.version == start
    # the driver's data written under the old schema survives the upgrade
    if start >= 1:
        old.execute("INSERT INTO meta(key, value) VALUES ('first_start', '2014-07-01')")
    old.close()
    upgraded = Store(tmp_path / "old" / DB_NAME)
    assert upgraded.version == latest_version()
    assert _tables(upgraded.conn) == _tables(fresh.conn)
    if start >= 1:
        assert upgraded.execute("SELECT value FROM meta WHERE key='first_start'").fetchone() == ("2014-07-01",)
    assert upgraded.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / DB_NAME
    s = Store(path, upto=1)
    s.execute("INSERT INTO meta(key, value) VALUES ('k', 'v')")
    s.close()
    real = migrations()
    broken = [*real[:1], store_mod.Migration(2, "0002_broken.sql", "CREATE TABLE half (x);\nTHIS IS NOT SQL;\n")]
    monkeypatch.setattr(store_mod, "migrations", lambda: broken)
    with pytest.raises(sqlite3.OperationalError):
        Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "half" not in _tables(conn)
    assert conn.execute("SELECT value FROM meta WHERE key='k'").fetchone() == ("v",)
    conn.close()


def test_newer_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={latest_version() + 5}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(NewerSchemaError, match="newer than this dashbridge knows"):
        Store(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME]


def test_corrupt_file_is_moved_aside_never_deleted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / DB_NAME
    junk = b"SQLite format 3\x00" + b"\x13" * 8000  # a header that lies, then garbage
    path.write_bytes(junk)
    s = Store(path)
    assert s.version == latest_version()
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == junk
    assert "moved aside" in caplog.text


def test_transaction_is_atomic(tmp_path: Path) -> None:
    s = Store(tmp_path / DB_NAME)
    with pytest.raises(RuntimeError), s.transaction() as c:
        c.execute("INSERT INTO meta(key, value) VALUES ('a', '1')")
        raise RuntimeError("power loss")
    assert s.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0
