"""The store's listing and dashboard reads (`list_responses`, `status_counts`, `lease_owners`)
and the schema migration that added the `model` column, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from bgmode.ids import new_id
from bgmode.records import ResponseRecord, Status, StoredEvent
from bgmode.store import Store, Write, open_store

pytest_plugins = ("tests.pg",)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bgmode.db'}"
    return str(request.getfixturevalue("pg_database_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


def is_postgres(url: str) -> bool:
    return url.startswith("postgres")


async def create(store: Store, tenant: str = "t1", model: str = "sim", status: str = "queued") -> ResponseRecord:
    rid = new_id("resp")
    rec = ResponseRecord(
        id=rid,
        tenant=tenant,
        status=status,
        background=True,
        body={"id": rid, "object": "response", "status": status, "model": model, "output": []},
        input_items=[{"id": "msg_1", "type": "message", "role": "user", "content": []}],
        request={"model": model},
        created_at=time.time(),
    )
    ev = [StoredEvent(0, "response.created", b"{}"), StoredEvent(1, "response.queued", b"{}")]
    return await store.create(rec, ev)


async def test_lists_a_tenants_responses_newest_first_with_a_cursor(store: Store) -> None:
    # statuses interleaved: an unfiltered page merges one walk per status
    statuses = ["queued", "completed", "failed", "completed", "cancelled"]
    mine = [await create(store, "t1", status=st) for st in statuses]
    await create(store, "t2")
    ids = [r.id for r in mine]

    page = await store.list_responses("t1", limit=3)
    assert [r.id for r in page] == ids[::-1][:3]
    rest = await store.list_responses("t1", after=page[-1].id, limit=3)
    assert [r.id for r in rest] == ids[::-1][3:]

    up = await store.list_responses("t1", order="asc", limit=2)
    assert [r.id for r in up] == ids[:2]
    more = await store.list_responses("t1", order="asc", after=up[-1].id, limit=10)
    assert [r.id for r in more] == ids[2:]
    assert await store.list_responses("t1", order="asc", after=ids[-1]) == []
    assert await store.list_responses("nobody") == []
    # the cursor need not exist: it is a position in id order
    assert [r.id for r in await store.list_responses("t1", after=ids[2] + "0")] == ids[2::-1]


async def test_listed_records_are_slim(store: Store) -> None:
    rec = await create(store, "t1", model="gpt-x")
    (got,) = await store.list_responses("t1")
    assert (got.id, got.tenant, got.status, got.background, got.last_seq) == (rec.id, "t1", "queued", True, 1)
    assert got.body == {} and got.input_items == [] and got.request == {}
    assert got.body_json is not None and orjson.loads(got.body_json)["model"] == "gpt-x"


async def test_filters_by_status_and_model(store: Store) -> None:
    a = await create(store, "t1", model="m-a")
    b = await create(store, "t1", model="m-b")
    c = await create(store, "t1", model="m-a")
    await create(store, "t2", model="m-a")
    claimed = await store.claim("w1", 1, 60)
    assert [r.id for r in claimed] == [a.id]
    await store.write("w1", [Write(a.id, [StoredEvent(2, "response.completed", b"{}")], finish="completed")])

    assert [r.id for r in await store.list_responses("t1", status="completed")] == [a.id]
    assert [r.id for r in await store.list_responses("t1", status="queued")] == [c.id, b.id]
    assert [r.id for r in await store.list_responses("t1", model="m-a")] == [c.id, a.id]
    assert [r.id for r in await store.list_responses("t1", model="m-a", status="queued")] == [c.id]
    assert [r.id for r in await store.list_responses("t1", model="m-a", order="asc", after=a.id)] == [c.id]
    assert await store.list_responses("t1", model="m-c") == []
    assert await store.list_responses("t1", status="failed") == []


async def test_status_counts_include_every_status(store: Store) -> None:
    zero = {s.value: 0 for s in Status}
    assert await store.status_counts() == zero
    assert await store.status_counts("t1") == zero
    for _ in range(3):
        await create(store, "t1")
    await create(store, "t2")
    await create(store, "t2", status="completed")
    await store.claim("w1", 1, 60)
    assert await store.status_counts("t1") == {**zero, "queued": 2, "in_progress": 1}
    assert await store.status_counts("t2") == {**zero, "queued": 1, "completed": 1}
    assert await store.status_counts() == {**zero, "queued": 3, "in_progress": 1, "completed": 1}


async def test_lease_owners(store: Store) -> None:
    assert await store.lease_owners() == []
    for _ in range(4):
        await create(store)
    before = time.time()
    await store.claim("w-a", 3, 60)
    await store.claim("w-b", 1, 120)
    owners = await store.lease_owners()
    assert [(o, n) for o, n, _ in owners] == [("w-a", 3), ("w-b", 1)]
    assert before + 60 <= owners[0][2] <= time.time() + 60
    assert before + 120 <= owners[1][2] <= time.time() + 120
    # a finished response holds no lease
    rid = (await store.list_responses("t1", status="in_progress", order="asc"))[0].id
    owner = (await store.get(rid, full=False)).lease_owner  # type: ignore[union-attr]
    assert owner is not None
    await store.write(owner, [Write(rid, [StoredEvent(2, "response.completed", b"{}")], finish="completed")])
    counts = {o: n for o, n, _ in await store.lease_owners()}
    assert sum(counts.values()) == 3


# -- the migration from a database without the model column -------------------------------------

_V1_ROW = (
    "INSERT INTO responses (id, tenant, status, background, body, input_items, request, created_at, updated_at)"
    " VALUES ({marks})"
)


def _v1_schema(schema: str) -> str:
    """The responses table as bgmode 0.1 made it: no model column (schema 2), no resume (3)."""
    v1 = schema.replace(",\n    model TEXT,\n    resume BLOB\n", "\n").replace(
        ",\n    model TEXT,\n    resume BYTEA\n", "\n"
    )
    assert "model TEXT" not in v1.split("CREATE TABLE IF NOT EXISTS events")[0]
    return v1


async def test_open_migrates_an_older_database(store_url: str) -> None:
    rid = new_id("resp")
    body = orjson.dumps({"id": rid, "object": "response", "status": "completed", "model": "old-model"})
    row: tuple[Any, ...] = (rid, "t1", "completed", True, body, b"[]", b"{}", time.time(), time.time())
    if is_postgres(store_url):
        from bgmode.store.postgres import SCHEMA

        conn = await asyncpg.connect(store_url)
        try:
            await conn.execute(_v1_schema(SCHEMA))
            await conn.execute("INSERT INTO bgmode_schema (version) VALUES (1)")
            await conn.execute(_V1_ROW.format(marks=", ".join(f"${i}" for i in range(1, 10))), *row)
        finally:
            await conn.close()
    else:
        from bgmode.store.sqlite import SCHEMA as SQLITE_SCHEMA
        from bgmode.store.sqlite import path_from_url

        c = sqlite3.connect(path_from_url(store_url))
        c.executescript(_v1_schema(SQLITE_SCHEMA))
        c.execute(_V1_ROW.format(marks=", ".join("?" * 9)), row)
        c.commit()
        c.close()
    for _ in range(2):  # idempotent: a second open finds it migrated
        s = open_store(store_url)
        await s.open()
        try:
            assert [r.id for r in await s.list_responses("t1", model="old-model")] == [rid]
            new = await create(s, "t1", model="new-model")
            assert [r.id for r in await s.list_responses("t1", model="new-model")] == [new.id]
            await s.delete(new.id)
        finally:
            await s.close()


# -- a tenant's newest page is an index walk, not a scan and a sort -----------------------------


async def test_listing_is_an_index_walk(store_url: str, store: Store) -> None:
    n = 20_000
    rows = []
    for i in range(n):
        rid = new_id("resp")
        st = ("queued", "completed", "failed")[i % 3]
        rows.append((rid, f"t{i % 50}", st, True, b"{}", b"[]", b"{}", float(i), float(i), f"m{i % 7}"))
    cols = "id, tenant, status, background, body, input_items, request, created_at, updated_at, model"
    queries: list[tuple[str, str | None, str | None, str | None]] = [
        ("t3", None, None, None),
        ("t3", "queued", None, None),
        ("t3", None, "m2", None),
        ("t3", None, None, rows[n // 2][0]),
        ("t3", "completed", None, rows[n // 2][0]),
    ]
    from bgmode.store.base import listing_query

    if is_postgres(store_url):
        conn = await asyncpg.connect(store_url)
        try:
            await conn.copy_records_to_table("responses", records=rows, columns=[c.strip() for c in cols.split(",")])
            await conn.execute("ANALYZE responses")
            for tenant, status, model, after in queries:
                sql, args = listing_query(tenant, status, model, after, "desc", 21, "id", "$")
                plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
                assert "Seq Scan" not in plan, plan
                assert ("responses_queue" in plan) == (status in (None, "queued")), plan
                assert ("responses_listed" in plan) == (status != "queued"), plan
                if status is not None:  # one walk down the index, no sort
                    assert "Sort" not in plan, plan
        finally:
            await conn.close()
    else:
        from bgmode.store.sqlite import path_from_url

        c = sqlite3.connect(path_from_url(store_url))
        c.executemany(f"INSERT INTO responses ({cols}) VALUES ({', '.join('?' * 10)})", rows)
        c.commit()
        c.execute("ANALYZE")
        for tenant, status, model, after in queries:
            sql, args = listing_query(tenant, status, model, after, "desc", 21, "id", "?")
            plan = "\n".join(str(r[3]) for r in c.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall())
            walks = [line for line in plan.splitlines() if "responses" in line]
            assert walks and all("INDEX responses_listed" in w or "INDEX responses_queue" in w for w in walks), plan
            if status is not None:  # one walk down the index, no sort
                assert "TEMP B-TREE" not in plan, plan
        c.close()
    got = await store.list_responses("t3", status="queued", limit=5)
    assert len(got) == 5 and all(r.status == "queued" and r.tenant == "t3" for r in got)
    assert [r.id for r in got] == sorted((r.id for r in got), reverse=True)
