"""The store contract (`bgmode.store.base`), run against every store: SQLite and PostgreSQL.

Each test gets a fresh store: a new SQLite file, or a new PostgreSQL database (see
`tests/pg.py`; skipped without PostgreSQL unless CI requires it).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from bgmode.records import ResponseRecord, Status, StoredEvent
from bgmode.store import Store, Write, WriteResult, open_store

if TYPE_CHECKING:
    from bgmode.store.postgres import PostgresStore

pytest_plugins = ("tests.pg",)

W1, W2 = "worker-1", "worker-2"
_ids = itertools.count()
_clock = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bgmode.db'}"
    return str(request.getfixturevalue("pg_database_url"))


@pytest.fixture
async def opened() -> AsyncIterator[list[Store]]:
    stores: list[Store] = []
    yield stores
    for s in stores:
        await s.close()


@pytest.fixture
def connect(store_url: str, opened: list[Store]) -> Callable[[], Awaitable[Store]]:
    """Open another store on the same database (another process, as far as the store knows)."""

    async def _connect() -> Store:
        s = open_store(store_url)
        await s.open()
        opened.append(s)
        return s

    return _connect


@pytest.fixture
async def store(connect: Callable[[], Awaitable[Store]]) -> Store:
    return await connect()


def is_postgres(store: Store) -> bool:
    return type(store).__name__ == "PostgresStore"


def event(seq: int, type: str = "response.output_text.delta") -> StoredEvent:
    return StoredEvent(seq, type, orjson.dumps({"type": type, "sequence_number": seq, "delta": f"d{seq}"}))


def record(tenant: str = "t1", status: str = Status.QUEUED.value, **kw: Any) -> ResponseRecord:
    n = next(_ids)
    rid = f"resp_{n:06d}_{time.time_ns()}"
    return ResponseRecord(
        id=rid,
        tenant=tenant,
        status=status,
        background=kw.pop("background", True),
        body={"id": rid, "object": "response", "status": status, "output": []},
        input_items=[{"id": f"msg_{n}", "type": "message", "role": "user", "content": [{"type": "input_text"}]}],
        request={"model": "sim", "context": [["user", "hi"]]},
        # strictly increasing, so "oldest first" is well defined
        created_at=kw.pop("created_at", 1_700_000_000.0 + next(_clock)),
        **kw,
    )


async def create(store: Store, tenant: str = "t1", **kw: Any) -> ResponseRecord:
    """A queued background response with its two first events (seq 0, 1)."""
    return await store.create(record(tenant, **kw), [event(0, "response.created"), event(1, "response.queued")])


async def running(store: Store, worker: str = W1, lease: float = 60.0) -> ResponseRecord:
    """A response claimed by `worker` (the only queued one)."""
    rec = await create(store)
    claimed = await store.claim(worker, 1, lease)
    assert [r.id for r in claimed] == [rec.id]
    return claimed[0]


async def all_events(store: Store, response_id: str) -> list[StoredEvent]:
    return await store.events_after(response_id, -1, 100_000)


async def seqs(store: Store, response_id: str) -> list[int]:
    return [e.seq for e in await all_events(store, response_id)]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll `check` until it holds (for conditions that depend on the clock, like lease expiry)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- create, get, delete ------------------------------------------------------------------------


async def test_create_get_round_trip(store: Store) -> None:
    rec = record("t9")
    events = [event(0, "response.created"), event(1, "response.queued")]
    out = await store.create(rec, events)
    assert out.id == rec.id and out.last_seq == 1
    got = await store.get(rec.id)
    assert got is not None
    assert got.tenant == "t9"
    assert (got.status, got.background, got.last_seq, got.attempts) == ("queued", True, 1, 0)
    assert (got.body, got.input_items, got.request) == (rec.body, rec.input_items, rec.request)
    assert got.created_at == rec.created_at
    assert (got.cancel_requested, got.lease_owner, got.lease_expires, got.events_purged) == (False, None, None, False)
    assert await all_events(store, rec.id) == events  # the exact bytes come back
    assert await store.get("resp_missing") is None


async def test_create_without_events_and_finished(store: Store) -> None:
    rec = record(status=Status.COMPLETED.value, background=False)
    await store.create(rec, [])
    got = await store.get(rec.id)
    assert got is not None and (got.status, got.background, got.last_seq) == ("completed", False, -1)
    assert await store.claim(W1, 10, 60) == []


async def test_idempotent_create_returns_the_original(store: Store) -> None:
    first = await store.create(record("t1"), [event(0)], idempotency_key="k1")
    again = record("t1")
    out = await store.create(again, [event(0), event(1)], idempotency_key="k1")
    assert out.id == first.id and out.last_seq == 0
    assert await store.get(again.id) is None
    assert await seqs(store, first.id) == [0]
    # the key is per tenant
    other = await store.create(record("t2"), [event(0)], idempotency_key="k1")
    assert other.id != first.id and await store.get(other.id) is not None


async def test_concurrent_idempotent_creates_store_one(store: Store, connect: Callable[[], Awaitable[Store]]) -> None:
    other = await connect()
    recs = [record("t1") for _ in range(6)]
    outs = await asyncio.gather(
        *(s.create(r, [event(0)], "same") for s, r in zip([store, other] * 3, recs, strict=True))
    )
    assert len({o.id for o in outs}) == 1
    assert sum([await store.get(r.id) is not None for r in recs]) == 1


async def test_delete(store: Store) -> None:
    rec = await create(store)
    assert await store.delete(rec.id) is True
    assert await store.get(rec.id) is None
    assert await all_events(store, rec.id) == []
    assert await store.delete(rec.id) is False


async def test_open_is_idempotent(store_url: str, opened: list[Store]) -> None:
    s = open_store(store_url)
    await s.open()
    rec = await create(s)
    await s.close()
    s2 = open_store(store_url)
    await s2.open()
    opened.append(s2)
    got = await s2.get(rec.id)
    assert got is not None and got.id == rec.id
    await s2.ping()


# -- claiming ---------------------------------------------------------------------------------


async def test_claim_takes_oldest_first_and_never_twice(store: Store) -> None:
    recs = [record(created_at=1000.0 + i) for i in range(5)]
    for r in [recs[3], recs[0], recs[4], recs[2], recs[1]]:
        await store.create(r, [event(0)])
    before = time.time()
    first = await store.claim(W1, 2, 30)
    assert [r.id for r in first] == [recs[0].id, recs[1].id]
    for r in first:
        assert (r.status, r.lease_owner, r.attempts) == ("in_progress", W1, 1)
        assert r.lease_expires is not None and r.lease_expires >= before + 30
    rest = await store.claim(W2, 10, 30)
    assert [r.id for r in rest] == [r.id for r in recs[2:]]
    assert await store.claim(W1, 10, 30) == []
    got = await store.get(recs[0].id)
    assert got is not None and (got.status, got.lease_owner) == ("in_progress", W1)


async def test_concurrent_claimers_get_disjoint_sets(store: Store, connect: Callable[[], Awaitable[Store]]) -> None:
    other = await connect()
    ids = {(await create(store)).id for _ in range(40)}

    async def claimer(s: Store, worker: str) -> list[str]:
        got: list[str] = []
        while True:
            batch = await s.claim(worker, 3, 30)
            if not batch:
                return got
            got += [r.id for r in batch]

    a, b, c = await asyncio.gather(claimer(store, "a"), claimer(other, "b"), claimer(store, "c"))
    assert sorted(a + b + c) == sorted(ids)  # every one claimed exactly once


async def test_count_queued_per_tenant(store: Store) -> None:
    for tenant in ["a", "a", "b"]:
        await create(store, tenant)
    assert await store.count_queued() == 3
    assert await store.count_queued("a") == 2
    assert await store.count_queued("b") == 1
    assert await store.count_queued("nobody") == 0
    await store.claim(W1, 1, 30)
    assert await store.count_queued() == 2


# -- fenced writes ----------------------------------------------------------------------------


async def test_write_appends_events_and_finishes(store: Store) -> None:
    rec = await running(store)
    body = {**rec.body, "status": "in_progress", "output": ["x"]}
    assert await store.write(W1, [Write(rec.id, [event(2), event(3)], body)]) == [WriteResult.OK]
    got = await store.get(rec.id)
    assert got is not None and (got.last_seq, got.body, got.status) == (3, body, "in_progress")
    # a write without a body keeps the stored one
    assert await store.write(W1, [Write(rec.id, [event(4)])]) == [WriteResult.OK]
    got = await store.get(rec.id)
    assert got is not None and (got.last_seq, got.body) == (4, body)
    done = {**body, "status": "completed"}
    res = await store.write(W1, [Write(rec.id, [event(5, "response.completed")], done, Status.COMPLETED.value)])
    assert res == [WriteResult.OK]
    got = await store.get(rec.id)
    assert got is not None
    assert (got.status, got.last_seq, got.body, got.lease_owner, got.lease_expires) == (
        "completed",
        5,
        done,
        None,
        None,
    )
    assert await seqs(store, rec.id) == [0, 1, 2, 3, 4, 5]


async def test_a_checkpoint_is_stored_with_its_events_and_cleared_by_the_finish(store: Store) -> None:
    rec = await running(store)
    token = {"id": "resp_upstream", "after": 7, "kinds": {"0": "message"}, "args": {}}
    later = {**token, "after": 9}
    assert await store.write(W1, [Write(rec.id, [event(2)], resume=token), Write(rec.id, [event(3)])]) == [
        WriteResult.OK,
        WriteResult.OK,
    ]
    got = await store.get(rec.id)
    assert got is not None and got.resume == token  # a write without one keeps it
    slim = await store.get(rec.id, full=False)
    assert slim is not None and slim.resume is None  # polls never read it
    # a fenced write stores nothing of its checkpoint
    assert await store.write(W2, [Write(rec.id, [event(4)], resume=later)]) == [WriteResult.FENCED]
    assert await store.write(W1, [Write(rec.id, [event(4)], resume=later)]) == [WriteResult.OK]
    # the worker is known gone; whoever takes the response over gets the latest checkpoint
    taken = await store.takeover(rec.id, W2, 30, owner=W1)
    assert taken is not None and taken.resume == later
    assert await store.write(W2, [Write(rec.id, [event(5, "response.completed")], None, "completed")]) == [
        WriteResult.OK
    ]
    got = await store.get(rec.id)
    assert got is not None and got.resume is None


async def test_write_is_fenced(store: Store) -> None:
    rec, rec2, rec3 = [await running(store) for _ in range(3)]
    # not the owner
    assert await store.write(W2, [Write(rec.id, [event(2)])]) == [WriteResult.FENCED]
    # after release (queued again, no owner)
    assert await store.release(rec.id, W2) is False
    assert await store.release(rec.id, W1) is True
    assert await store.write(W1, [Write(rec.id, [event(2)])]) == [WriteResult.FENCED]
    # after finishing
    assert await store.write(W1, [Write(rec2.id, [event(2)], None, Status.COMPLETED.value)]) == [WriteResult.OK]
    assert await store.write(W1, [Write(rec2.id, [event(3)])]) == [WriteResult.FENCED]
    assert await store.write(W1, [Write(rec2.id, [event(3)], None, Status.FAILED.value, force=True)]) == [
        WriteResult.FENCED
    ]
    # after delete
    assert await store.delete(rec3.id)
    assert await store.write(W1, [Write(rec3.id, [event(2)])]) == [WriteResult.FENCED]
    # nothing a fenced write carried was stored; a terminal status is never changed
    assert await seqs(store, rec.id) == [0, 1]
    assert await seqs(store, rec2.id) == [0, 1, 2]
    assert await all_events(store, rec3.id) == []
    got = await store.get(rec2.id)
    assert got is not None and got.status == "completed"
    got = await store.get(rec.id)
    assert got is not None and (got.status, got.last_seq) == ("queued", 1)


async def test_one_batch_many_fates_in_order(store: Store) -> None:
    a = await running(store)
    b = await running(store)
    c = await running(store, worker=W2)
    assert await store.request_cancel(b.id)
    writes = [
        Write(a.id, [event(2)]),
        Write(b.id, [event(2)], None, Status.COMPLETED.value),  # refused: cancel requested
        Write(c.id, [event(2)]),  # not ours
        Write(a.id, [event(3)], {"final": True}, Status.COMPLETED.value),
        Write(a.id, [event(4)]),  # after its own finish in the same batch
        Write(b.id, [event(2)], None, Status.CANCELLED.value),
        Write("resp_nope", [event(0)]),
    ]
    assert await store.write(W1, writes) == [
        WriteResult.OK,
        WriteResult.CANCEL_REQUESTED,
        WriteResult.FENCED,
        WriteResult.OK,
        WriteResult.FENCED,
        WriteResult.OK,
        WriteResult.FENCED,
    ]
    ga, gb, gc = [await store.get(r.id) for r in (a, b, c)]
    assert ga is not None and (ga.status, ga.last_seq, ga.body, ga.lease_owner) == (
        "completed",
        3,
        {"final": True},
        None,
    )
    assert gb is not None and (gb.status, gb.last_seq) == ("cancelled", 2)
    assert gc is not None and (gc.status, gc.last_seq, gc.lease_owner) == ("in_progress", 1, W2)
    assert await seqs(store, a.id) == [0, 1, 2, 3]
    assert await seqs(store, b.id) == [0, 1, 2]
    assert await seqs(store, c.id) == [0, 1]
    assert await store.write(W1, []) == []


# -- cancel ------------------------------------------------------------------------------------


async def test_cancel_requested_refuses_a_late_completion(store: Store) -> None:
    rec = await running(store)
    assert await store.request_cancel(rec.id) is True
    got = await store.get(rec.id)
    assert got is not None and got.cancel_requested
    # output may still be written; finishing other than cancelled is refused
    assert await store.write(W1, [Write(rec.id, [event(2)])]) == [WriteResult.OK]
    for status in (Status.COMPLETED, Status.FAILED, Status.INCOMPLETE):
        res = await store.write(W1, [Write(rec.id, [event(3, "response.x")], {"no": 1}, status.value)])
        assert res == [WriteResult.CANCEL_REQUESTED]
    got = await store.get(rec.id)
    assert got is not None and (got.status, got.last_seq, got.lease_owner) == ("in_progress", 2, W1)
    assert await seqs(store, rec.id) == [0, 1, 2]
    # the cancelled finish wins
    res = await store.write(W1, [Write(rec.id, [event(3, "response.cancelled")], None, Status.CANCELLED.value)])
    assert res == [WriteResult.OK]
    got = await store.get(rec.id)
    assert got is not None and got.status == "cancelled"
    assert await store.request_cancel(rec.id) is False


async def test_forced_finish_wins_over_a_cancel_request(store: Store) -> None:
    rec = await running(store)
    assert await store.request_cancel(rec.id)
    res = await store.write(W1, [Write(rec.id, [event(2)], None, Status.FAILED.value, force=True)])
    assert res == [WriteResult.OK]
    got = await store.get(rec.id)
    assert got is not None and got.status == "failed"


async def test_request_cancel_only_while_in_progress(store: Store) -> None:
    queued = await create(store)
    assert await store.request_cancel(queued.id) is False
    assert await store.request_cancel("resp_missing") is False
    got = await store.get(queued.id)
    assert got is not None and not got.cancel_requested


async def test_cancel_queued_only_while_queued(store: Store) -> None:
    rec = await create(store)
    body = {**rec.body, "status": "cancelled"}
    assert await store.cancel_queued(rec.id, body, [event(2, "response.cancelled")]) is True
    got = await store.get(rec.id)
    assert got is not None and (got.status, got.body, got.last_seq) == ("cancelled", body, 2)
    assert await seqs(store, rec.id) == [0, 1, 2]
    assert await store.claim(W1, 10, 30) == []
    # a second time: no longer queued
    assert await store.cancel_queued(rec.id, body, [event(3, "response.cancelled")]) is False
    # claimed meanwhile
    run = await running(store)
    assert await store.cancel_queued(run.id, body, [event(2, "response.cancelled")]) is False
    got = await store.get(run.id)
    assert got is not None and got.status == "in_progress"
    # built from a stale read (its log has grown since): refused
    stale = await create(store)
    assert await store.cancel_queued(stale.id, body, [event(5, "response.cancelled")]) is False
    assert await seqs(store, stale.id) == [0, 1]


# -- leases -------------------------------------------------------------------------------------


async def test_heartbeat_renews_the_leases_of_what_runs_and_reports_cancels(store: Store) -> None:
    a = await running(store, lease=5)
    b = await running(store, lease=5)
    c = await running(store, worker=W2, lease=5)
    lost = await running(store, lease=5)  # leased to W1, which does not run it (a lost claim)
    ids = [a.id, b.id, c.id]
    before = time.time()
    assert await store.heartbeat(W1, 600, ids) == []
    for r, renewed in ((a, True), (b, True), (c, False), (lost, False)):
        got = await store.get(r.id)
        assert got is not None and got.lease_expires is not None
        assert (got.lease_expires >= before + 600) is renewed
    assert await store.request_cancel(b.id)
    assert await store.request_cancel(c.id)
    assert await store.request_cancel(lost.id)
    assert await store.heartbeat(W1, 600, ids) == [b.id]
    assert await store.heartbeat(W2, 600, ids) == [c.id]
    assert await store.heartbeat("nobody", 600, ids) == []
    # a finished response is no longer leased
    await store.write(W1, [Write(b.id, [event(2)], None, Status.CANCELLED.value)])
    assert await store.heartbeat(W1, 600, ids) == []


async def test_takeover_only_after_the_lease_expired(store: Store) -> None:
    fresh = await running(store, lease=600)
    assert await store.takeover(fresh.id, W2, 60) is None
    stale = await running(store, lease=0.05)
    await store.write(W1, [Write(stale.id, [event(2)])])

    async def expired() -> bool:
        return stale.id in [r.id for r in await store.expired(100)]

    await eventually(expired)
    assert fresh.id not in [r.id for r in await store.expired(100)]
    taken = await store.takeover(stale.id, W2, 600)
    assert taken is not None
    assert (taken.lease_owner, taken.status, taken.last_seq, taken.attempts) == (W2, "in_progress", 2, 1)
    assert await store.takeover(stale.id, "worker-3", 60) is None  # W2's lease is fresh
    assert stale.id not in [r.id for r in await store.expired(100)]
    # the lost worker is fenced, the new owner writes on
    assert await store.write(W1, [Write(stale.id, [event(3)])]) == [WriteResult.FENCED]
    assert await store.write(W2, [Write(stale.id, [event(3)])]) == [WriteResult.OK]
    # handed back to the queue, then claimed again
    assert await store.release(stale.id, W1) is False
    assert await store.release(stale.id, W2) is True
    got = await store.get(stale.id)
    assert got is not None and (got.status, got.lease_owner, got.lease_expires) == ("queued", None, None)
    again = await store.claim("worker-3", 10, 60)
    assert [r.id for r in again] == [stale.id] and again[0].attempts == 2


async def test_every_reader_sees_the_last_event_written_without_a_snapshot(store: Store) -> None:
    """Writes that carry events alone (most of a run's) still move the position everyone reads:
    a poll, a hand-back to the queue and the next claim, the next writer's fence, a finish."""
    rec = await running(store)
    assert await store.write(W1, [Write(rec.id, [event(2)]), Write(rec.id, [event(3)])]) == [WriteResult.OK] * 2
    got = await store.get(rec.id, full=False)
    assert got is not None and got.last_seq == 3
    assert await store.release(rec.id, W1) is True
    got = await store.get(rec.id)
    assert got is not None and (got.status, got.last_seq) == ("queued", 3)
    again = await store.claim(W2, 1, 60)
    assert [(r.id, r.last_seq) for r in again] == [(rec.id, 3)]
    assert await store.write(W2, [Write(rec.id, [event(3)])]) == [WriteResult.FENCED]
    assert await store.write(W2, [Write(rec.id, [event(4)])]) == [WriteResult.OK]
    done = {**rec.body, "status": "completed"}
    assert await store.write(W2, [Write(rec.id, [], done, Status.COMPLETED.value)]) == [WriteResult.OK]
    got = await store.get(rec.id)
    assert got is not None and (got.status, got.last_seq) == ("completed", 4)
    assert await seqs(store, rec.id) == [0, 1, 2, 3, 4]


async def test_takeover_by_owner_and_leased(store: Store) -> None:
    rec = await running(store, W1, lease=3600)
    other = await running(store, W2, lease=3600)
    # a live lease cannot be taken by expiry, only from the owner named
    assert await store.takeover(rec.id, W2, 60) is None
    assert await store.takeover(rec.id, W2, 60, owner=W2) is None
    found = await store.leased("worker-1", 10)
    assert [r.id for r in found] == [rec.id] and found[0].lease_owner == W1
    assert {r.id for r in await store.leased("worker-", 10)} == {rec.id, other.id}
    taken = await store.takeover(rec.id, W2, 60, owner=W1)
    assert taken is not None and taken.lease_owner == W2 and taken.input_items == rec.input_items
    assert await store.leased("worker-1", 10) == []


async def test_slim_get_reads_only_the_body(store: Store) -> None:
    rec = await create(store)
    slim = await store.get(rec.id, full=False)
    assert slim is not None and slim.status == "queued" and slim.tenant == rec.tenant
    assert slim.body_json is not None and orjson.loads(slim.body_json) == rec.body
    assert slim.input_items == [] and slim.request == {}


async def test_secret_is_kept_by_the_first_writer(store: Store, connect: Callable[[], Awaitable[Store]]) -> None:
    other = await connect()
    first, second = await asyncio.gather(store.secret("k", b"one"), other.secret("k", b"two"))
    assert first == second and first in (b"one", b"two")
    assert await store.secret("k", b"three") == first
    assert await store.secret("other", b"x") == b"x"


async def test_takeover_is_exclusive(store: Store, connect: Callable[[], Awaitable[Store]]) -> None:
    other = await connect()
    rec = await running(store, lease=0.05)

    async def expired() -> bool:
        return bool(await store.expired(10))

    await eventually(expired)
    outs = await asyncio.gather(*(s.takeover(rec.id, f"w{i}", 600) for i, s in enumerate([store, other] * 4)))
    assert len([o for o in outs if o is not None]) == 1


async def test_takeover_ignores_queued_and_finished(store: Store) -> None:
    done = await running(store, lease=0.05)
    await store.write(W1, [Write(done.id, [event(2)], None, Status.COMPLETED.value)])
    queued = await create(store)
    assert await store.takeover(queued.id, W2, 60) is None
    assert await store.takeover(done.id, W2, 60) is None
    assert await store.expired(10) == []


# -- event logs --------------------------------------------------------------------------------


async def test_events_after_pages_in_order_without_gaps(store: Store) -> None:
    rec = await running(store)
    seq = 2
    for size in [1, 7, 300, 1, 999, 1200]:
        batch = [event(s) for s in range(seq, seq + size)]
        assert await store.write(W1, [Write(rec.id, batch)]) == [WriteResult.OK]
        seq += size
    n = seq
    got: list[StoredEvent] = []
    after = -1
    while True:
        page = await store.events_after(rec.id, after, 1000)
        assert len(page) <= 1000
        got += page
        if not page:
            break
        after = page[-1].seq
    assert [e.seq for e in got] == list(range(n))
    assert got[5] == event(5)
    assert [e.seq for e in await store.events_after(rec.id, 10, 3)] == [11, 12, 13]
    assert await store.events_after(rec.id, n - 1) == []
    got_rec = await store.get(rec.id)
    assert got_rec is not None and got_rec.last_seq == n - 1


async def test_duplicate_sequence_numbers_are_rejected(store: Store) -> None:
    a = await running(store)
    b = await running(store)
    await store.write(W1, [Write(a.id, [event(2), event(3)]), Write(b.id, [event(2)])])
    # issued together: one group commit on SQLite, concurrent transactions on PostgreSQL
    dup, ok = await asyncio.gather(
        store.write(W1, [Write(a.id, [event(3, "dup"), event(4, "dup")])]),
        store.write(W1, [Write(b.id, [event(3)])]),
        return_exceptions=True,
    )
    assert ok == [WriteResult.OK]
    assert dup == [WriteResult.FENCED]  # refused alone, never raised
    assert await all_events(store, a.id) == [
        event(0, "response.created"),
        event(1, "response.queued"),
        event(2),
        event(3),
    ]
    assert await seqs(store, b.id) == [0, 1, 2, 3]
    got = await store.get(a.id)
    assert got is not None and got.last_seq == 3


async def test_a_write_that_would_leave_a_gap_is_refused(store: Store) -> None:
    rec = await running(store)
    assert await store.write(W1, [Write(rec.id, [event(3)])]) == [WriteResult.FENCED]
    assert await store.write(W1, [Write(rec.id, [event(2), event(4)])]) == [WriteResult.FENCED]
    assert await store.write(W1, [Write(rec.id, [event(2), event(3)])]) == [WriteResult.OK]
    assert await seqs(store, rec.id) == [0, 1, 2, 3]


async def test_a_duplicate_does_not_undo_the_other_writes_of_its_call(store: Store) -> None:
    a = await running(store)
    b = await running(store)
    res = await store.write(W1, [Write(b.id, [event(2)]), Write(a.id, [event(1, "dup")]), Write(b.id, [event(3)])])
    assert res == [WriteResult.OK, WriteResult.FENCED, WriteResult.OK]
    assert await seqs(store, b.id) == [0, 1, 2, 3]
    assert await all_events(store, a.id) == [event(0, "response.created"), event(1, "response.queued")]


# -- retention ----------------------------------------------------------------------------------


async def test_sweep_deletes_old_responses_and_purges_old_logs(store: Store) -> None:
    async def finished() -> ResponseRecord:
        rec = await running(store)
        await store.write(W1, [Write(rec.id, [event(2, "response.completed")], None, Status.COMPLETED.value)])
        return rec

    old = [await finished() for _ in range(3)]
    mid = time.time()
    await eventually(lambda: _after(mid))
    recent = await finished()
    live = await running(store)
    queued = await create(store)
    cutoff = time.time() + 1
    # responses finished before `mid` go; logs of all finished ones before `cutoff` go; limit 2 each
    assert await store.sweep(mid, cutoff, 2) == (2, 2)
    assert await store.sweep(mid, cutoff, 2) == (1, 0)
    assert await store.sweep(mid, cutoff, 2) == (0, 0)
    for r in old:
        assert await store.get(r.id) is None
        assert await all_events(store, r.id) == []
    got = await store.get(recent.id)
    assert got is not None and got.events_purged and got.status == "completed" and got.last_seq == 2
    assert await all_events(store, recent.id) == []
    for r in (live, queued):
        got = await store.get(r.id)
        assert got is not None and not got.events_purged
        assert await seqs(store, r.id) == [0, 1]


async def _after(t: float) -> bool:
    return time.time() > t


# -- wake-ups -----------------------------------------------------------------------------------


async def test_wait_for_events_returns_on_a_write_from_another_connection(
    store: Store, connect: Callable[[], Awaitable[Store]]
) -> None:
    writer = await connect()
    rec = await running(writer)
    waiter = asyncio.create_task(store.wait_for_events(rec.id, 1, 60))
    # nothing new yet: it keeps waiting (a bounded look, not a sleep standing in for an event)
    done, _ = await asyncio.wait({waiter}, timeout=0.5)
    assert not done
    assert await writer.write(W1, [Write(rec.id, [event(2)])]) == [WriteResult.OK]
    await asyncio.wait_for(waiter, 20)  # far less than its 60 s timeout
    assert await seqs(store, rec.id) == [0, 1, 2]
    # events committed before the wait began: no need to wait at all
    await asyncio.wait_for(store.wait_for_events(rec.id, 1, 60), 20)


async def test_wait_for_events_is_bounded_by_its_timeout(store: Store) -> None:
    rec = await running(store)
    await asyncio.wait_for(store.wait_for_events(rec.id, 1, 0.1), 20)
    await asyncio.wait_for(store.wait_for_events("resp_missing", -1, 0.1), 20)


async def test_wait_for_events_wakes_on_cancel_queued(store: Store, connect: Callable[[], Awaitable[Store]]) -> None:
    other = await connect()
    rec = await create(other)
    waiter = asyncio.create_task(store.wait_for_events(rec.id, 1, 60))
    done, _ = await asyncio.wait({waiter}, timeout=0.5)
    assert not done
    assert await other.cancel_queued(rec.id, rec.body, [event(2, "response.cancelled")])
    await asyncio.wait_for(waiter, 20)


async def test_wait_for_work_returns_on_a_create_elsewhere(
    store: Store, connect: Callable[[], Awaitable[Store]]
) -> None:
    other = await connect()
    await asyncio.wait_for(store.wait_for_work(0.1), 20)  # bounded
    assert await store.claim(W1, 10, 60) == []
    waiter = asyncio.create_task(store.wait_for_work(60 if is_postgres(store) else 0.5))
    await asyncio.sleep(0.05)
    rec = await create(other)
    await asyncio.wait_for(waiter, 20)
    assert [r.id for r in await store.claim(W1, 10, 60)] == [rec.id]


# -- PostgreSQL only ----------------------------------------------------------------------------


@pytest.fixture
def pg_connect(pg_database_url: str, opened: list[Store]) -> Callable[[], Awaitable[PostgresStore]]:
    async def _connect() -> PostgresStore:
        from bgmode.store.postgres import PostgresStore

        s = PostgresStore(pg_database_url)
        await s.open()
        opened.append(s)
        return s

    return _connect


@pytest.mark.postgres
async def test_pg_write_survives_events_stored_beyond_last_seq(
    pg_connect: Callable[[], Awaitable[PostgresStore]],
) -> None:
    """Events the store did not write itself collide: only that write is refused."""
    pg = await pg_connect()
    a = await running(pg)
    b = await running(pg)
    await pg.pool.execute("INSERT INTO events VALUES ($1, 3, 'x', '\\x00'::bytea)", a.id)
    res = await pg.write(W1, [Write(a.id, [event(2), event(3)]), Write(b.id, [event(2)])])
    assert res == [WriteResult.FENCED, WriteResult.OK]
    assert await seqs(pg, a.id) == [0, 1, 3]
    assert await seqs(pg, b.id) == [0, 1, 2]
    got = await pg.get(b.id)
    assert got is not None and got.last_seq == 2


@pytest.mark.postgres
async def test_pg_listener_reconnects(pg_connect: Callable[[], Awaitable[PostgresStore]]) -> None:
    pg, other = await pg_connect(), await pg_connect()
    listeners = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'bgmode-listen'"
    )
    before = {r[0] for r in await other.pool.fetch(listeners)}
    assert len(before) == 2  # one per store
    await other.pool.execute(f"SELECT pg_terminate_backend(pid) FROM ({listeners}) l")

    async def back() -> bool:
        now = {r[0] for r in await other.pool.fetch(listeners)}
        return pg.listening and other.listening and len(now) == 2 and not now & before

    await eventually(back, timeout=30)
    rec = await running(other)
    waiter = asyncio.create_task(pg.wait_for_events(rec.id, 1, 60))
    await asyncio.sleep(0.05)
    await other.write(W1, [Write(rec.id, [event(2)])])
    await asyncio.wait_for(waiter, 20)


@pytest.mark.postgres
async def test_pg_search_path_isolates_a_schema(pg_database_url: str, opened: list[Store]) -> None:
    a = open_store(pg_database_url + "?search_path=tenant_a")
    b = open_store(pg_database_url + "?search_path=tenant_b")
    for s in (a, b):
        await s.open()
        opened.append(s)
    rec = await create(a)
    assert await b.get(rec.id) is None
    assert await b.claim(W1, 10, 60) == []
    assert [r.id for r in await a.claim(W1, 10, 60)] == [rec.id]


# -- queue limits checked inside the create's transaction ---------------------------------------


async def test_queue_limit_holds_under_concurrent_creates(connect: Callable[[], Awaitable[Store]]) -> None:
    from bgmode.store.base import QueueFull

    stores = [await connect() for _ in range(2)]  # two processes, as far as the stores know
    results = await asyncio.gather(
        *(stores[i % 2].create(record("t1"), [event(0)], max_queued=1) for i in range(8)), return_exceptions=True
    )
    assert sum(isinstance(r, ResponseRecord) for r in results) == 1
    refused = [r for r in results if isinstance(r, QueueFull)]
    assert len(refused) == 7 and not any(r.per_tenant for r in refused)
    assert refused[0].status_code == 429 and refused[0].headers == {"Retry-After": "1"}
    assert await stores[0].count_queued() == 1


async def test_tenant_queue_limit_holds_under_concurrent_creates(connect: Callable[[], Awaitable[Store]]) -> None:
    from bgmode.store.base import QueueFull

    stores = [await connect() for _ in range(2)]
    creates = [
        stores[i % 2].create(record(tenant), [event(0)], max_queued=100, max_queued_tenant=2)
        for i, tenant in enumerate(["a", "b"] * 6)
    ]
    results = await asyncio.gather(*creates, return_exceptions=True)
    made = [r for r in results if isinstance(r, ResponseRecord)]
    assert sorted(r.tenant for r in made) == ["a", "a", "b", "b"]
    assert all(isinstance(r, QueueFull) and r.per_tenant for r in results if not isinstance(r, ResponseRecord))
    assert (await stores[0].count_queued("a"), await stores[0].count_queued("b")) == (2, 2)


async def test_queue_limit_counts_only_queued_and_lets_idempotent_repeats_through(store: Store) -> None:
    from bgmode.store.base import QueueFull

    first = await store.create(record("t1"), [event(0)], "key-1", max_queued=1)
    again = await store.create(record("t1"), [event(0)], "key-1", max_queued=1)  # the queue is full
    assert again.id == first.id
    with pytest.raises(QueueFull):
        await store.create(record("t1"), [event(0)], "key-2", max_queued=1)
    await store.claim(W1, 1, 60)  # running responses are not queued
    await store.create(record("t1"), [event(0)], max_queued=1)
    await store.create(record("t1", status=Status.COMPLETED.value), [], max_queued=0)
