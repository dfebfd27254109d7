"""The phone registry on a real SQLite file: priority order, re-pairing, forgetting with cascade."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashbridge.daemon.bluetooth.registry import Registry
from dashbridge.daemon.store import Store

A, B, C = "AA:BB:CC:DD:EE:01", "AA:BB:CC:DD:EE:02", "AA:BB:CC:DD:EE:03"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "state.sqlite3")
    yield s  # type: ignore[misc]
    s.close()


def test_new_phones_go_last_and_repairing_keeps_the_place(store: Store) -> None:
    reg = Registry(store)
    for i, addr in enumerate((A, B, C)):
        reg.add(addr, f"p{i}", ["hfp"], now=100.0 + i)
    assert [r.address for r in reg.all()] == [A, B, C]
    reg.set_needs_repair(A, True)
    again = reg.add(A, "renamed", ["hfp", "map"], now=200.0)
    assert again.priority == 0 and again.name == "renamed" and again.profiles == ("hfp", "map")
    assert not again.needs_repair


def test_move_renumbers_everyone(store: Store) -> None:
    reg = Registry(store)
    for addr in (A, B, C):
        reg.add(addr, addr, [])
    changed = reg.move(C, 0)
    assert [r.address for r in reg.all()] == [C, A, B]
    assert {r.address for r in changed} == {A, B, C}
    assert [r.priority for r in reg.all()] == [0, 1, 2]
    reg.move(C, 99)  # past the end: last
    assert [r.address for r in reg.all()] == [A, B, C]


def test_forget_deletes_everything_stored_about_the_phone(store: Store) -> None:
    reg = Registry(store)
    reg.add(A, "a", [])
    reg.add(B, "b", [])
    # messages belongs to the MAP component: fill whatever columns it requires.
    cols = store.execute("PRAGMA table_info(messages)").fetchall()
    required = [name for _cid, name, ctype, notnull, default, pk in cols
                if (notnull or pk) and default is None and not (pk and ctype.upper() == "INTEGER" and pk == 1
                                                                and sum(c[5] > 0 for c in cols) == 1)]
    for addr in (A, B):
        values = {"phone": addr, **{k: "1" for k in required if k != "phone"}}
        store.execute(f"INSERT INTO messages ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                      tuple(values.values()))
    assert reg.forget(A, tombstone=True)
    assert [r[0] for r in store.execute("SELECT phone FROM messages")] == [B]
    assert reg.removals() == [A]
    reg.removal_done(A)
    assert reg.removals() == []
    assert not reg.forget(A, tombstone=False)


def test_connected_clears_needs_repair_and_sets_last_connected(store: Store) -> None:
    reg = Registry(store)
    reg.add(A, "a", [])
    assert reg.set_needs_repair(A, True) and not reg.set_needs_repair(A, True)
    reg.connected(A, now=1234.0)
    rec = reg.get(A)
    assert rec is not None and rec.last_connected == 1234.0 and rec.connected_once and not rec.needs_repair


def test_pairing_again_removes_a_pending_removal(store: Store) -> None:
    reg = Registry(store)
    reg.add(A, "a", [])
    reg.forget(A, tombstone=True)
    reg.add(A, "a", [])
    assert reg.removals() == []
