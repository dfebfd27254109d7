"""The durable outbox: committed before sent, survives reopening, bounded per kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashbridge.daemon.cloud.outbox import POLICIES, CloudDb, Outbox, OutboxFull
from dashbridge.daemon.store import DB_NAME, Store


def _outbox(path: Path) -> tuple[Store, Outbox]:
    store = Store(path / DB_NAME)
    return store, Outbox(CloudDb(store.conn))


def test_items_survive_reopening_the_database_with_their_keys(tmp_path: Path) -> None:
    store, ob = _outbox(tmp_path)
    item, created = ob.enqueue("consent", {"name": "a", "granted": True}, 100.0, coalesce_key="a")
    assert created and len(item.key) == 32
    store.close()  # as after a crash: nothing but the file remains
    store, ob = _outbox(tmp_path)
    [again] = ob.items()
    assert (again.key, again.payload) == (item.key, {"name": "a", "granted": True})
    store.close()


def test_enqueue_is_durable_and_restores_the_stores_sync_mode(tmp_path: Path) -> None:
    store, ob = _outbox(tmp_path)
    before = store.conn.execute("PRAGMA synchronous").fetchone()[0]
    ob.enqueue("register", {}, 0.0)
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == before
    store.close()


def test_a_registration_is_never_replaced_or_dropped() -> None:
    ob = Outbox(CloudDb.memory())
    first, created = ob.enqueue("register", {"n": 1}, 0.0)
    second, created2 = ob.enqueue("register", {"n": 2}, 5.0)
    assert created and not created2 and second.key == first.key
    assert ob.expire(10 * 365 * 86400.0) == []
    assert [i.key for i in ob.items()] == [first.key]


def test_a_newer_consent_replaces_the_queued_one_for_the_same_name_only() -> None:
    ob = Outbox(CloudDb.memory())
    a1, _ = ob.enqueue("consent", {"v": 1}, 0.0, coalesce_key="a")
    ob.enqueue("consent", {"v": 1}, 0.0, coalesce_key="b")
    a2, _ = ob.enqueue("consent", {"v": 2}, 1.0, coalesce_key="a")
    assert a2.key != a1.key
    assert sorted((i.coalesce_key, i.payload["v"]) for i in ob.items()) == [("a", 2), ("b", 1)]


def test_bounds_per_kind(tmp_path: Path) -> None:
    dropped: list[str] = []
    ob = Outbox(CloudDb.memory(), on_drop=lambda item, why: dropped.append(item.coalesce_key))
    cap = POLICIES["destination_ack"].max_items
    for i in range(cap + 3):
        ob.enqueue("destination_ack", {"id": str(i)}, float(i), coalesce_key=str(i))
    assert ob.depth() == cap and dropped == ["0", "1", "2"]  # oldest acks go first
    for i in range(POLICIES["consent"].max_items):
        ob.enqueue("consent", {}, 0.0, coalesce_key=f"c{i}")
    with pytest.raises(OutboxFull):
        ob.enqueue("consent", {}, 0.0, coalesce_key="one-too-many")


def test_stale_code_requests_age_out_but_consents_do_not() -> None:
    dropped: list[str] = []
    ob = Outbox(CloudDb.memory(), on_drop=lambda item, why: dropped.append(item.kind))
    ob.enqueue("link_code", {}, 0.0)
    ob.enqueue("consent", {}, 0.0, coalesce_key="x")
    ob.expire(2 * 3600.0)
    assert dropped == ["link_code"] and [i.kind for i in ob.items()] == ["consent"]


def test_due_order_retry_release_and_refuse() -> None:
    ob = Outbox(CloudDb.memory())
    a, _ = ob.enqueue("consent", {}, 10.0, coalesce_key="a")
    b, _ = ob.enqueue("consent", {}, 11.0, coalesce_key="b")
    assert ob.due(5.0) is None and ob.next_due() == 10.0
    assert ob.due(20.0) == a
    ob.retry(a, "boom", 100.0)
    assert ob.due(20.0) == b
    assert ob.due(20.0, blocked_kinds=("consent",)) is None
    ob.release(20.0)
    assert ob.due(20.0) is not None and ob.next_due() == 11.0
    ob.refuse(b, "no")
    assert ob.depth() == 1 and ob.items("refused")[0].last_error == "no"
    ob.complete(ob.items()[0])
    assert ob.depth() == 0
