"""PostgreSQL store: many API and worker processes on one database.

The same tables, columns and semantics as the SQLite store (see `store/base.py` for the
contract), with what a shared server needs:

- **Claiming** takes the oldest queued rows with `FOR UPDATE SKIP LOCKED`, so concurrent
  workers never claim the same response and never wait on each other.
- **Writing** is set-based: one transaction per `write()` call locks all its rows in id
  order (`SELECT ... FOR UPDATE`), decides each write's fate in Python (fence, cancel rule,
  duplicate sequence numbers), then inserts every accepted event in one `unnest` insert and
  updates every touched row in one statement: five round trips per batch, however large.
  A write refused for any reason leaves the others of its batch intact.
- **Wake-ups** go through LISTEN/NOTIFY on a dedicated connection: `bgmode_work` when
  work is queued (create, release), `bgmode_events` with payload `<response_id>:<last_seq>`
  when a response gained events or finished. Notifications are sent inside the
  transaction, so they arrive only after the commit. They only make waiting short: every
  wait is bounded and callers re-read the store (notify for latency, poll for correctness).

Times are Python `time.time()` floats in DOUBLE PRECISION columns, as in the SQLite
store, so both behave the same. JSON columns hold the exact orjson bytes (BYTEA).
Isolation: everything lives in the connection's `search_path`; a `?search_path=NAME` URL
parameter is passed to the server, and the schema is created if missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from bgmode.records import TERMINAL_VALUES, ResponseRecord, Status, StoredEvent
from bgmode.store.base import (
    DELIVERY_COLUMNS,
    LISTING_INDEXES,
    ConversationAppend,
    ConversationLocked,
    ConversationRecord,
    DeliveryRecord,
    Store,
    Write,
    WriteResult,
    last_seq_sql,
    listing_query,
    queue_full,
    status_counts_query,
    unique_ids,
)

log = logging.getLogger("bgmode.store.postgres")

T = TypeVar("T")
_Conn: TypeAlias = "asyncpg.Connection | PoolConnectionProxy"

SCHEMA_VERSION = 3
WORK_CHANNEL = "bgmode_work"
WEBHOOKS_CHANNEL = "bgmode_webhooks"
EVENTS_CHANNEL = "bgmode_events"
#: serialises schema creation between processes starting at once
_SCHEMA_LOCK = 0x62676D6F6465  # "bgmode"
#: serialise creates that check the queue limits (the second, with a tenant hash: int4 keys)
_QUEUE_LOCK = 0x62676D6F6471  # "bgmodq"
_TENANT_QUEUE_LOCK = 0x62677175  # "bgqu"

SCHEMA = """
CREATE TABLE IF NOT EXISTS bgmode_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    background BOOLEAN NOT NULL,
    body BYTEA NOT NULL,
    input_items BYTEA NOT NULL,
    request BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    last_seq BIGINT NOT NULL DEFAULT -1,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    lease_owner TEXT,
    lease_expires DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    events_purged BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key TEXT,
    model TEXT,
    resume BYTEA
);
CREATE INDEX IF NOT EXISTS responses_leased ON responses (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS responses_updated ON responses (updated_at);
CREATE UNIQUE INDEX IF NOT EXISTS responses_idem ON responses (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    response_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (response_id, seq)
);
CREATE TABLE IF NOT EXISTS bgmode_secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    metadata BYTEA NOT NULL,
    next_pos BIGINT NOT NULL DEFAULT 0,
    active_response TEXT,
    active_until DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_at);
CREATE TABLE IF NOT EXISTS conversation_items (
    conversation_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    item_id TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (conversation_id, pos)
);
CREATE UNIQUE INDEX IF NOT EXISTS conversation_items_id ON conversation_items (conversation_id, item_id);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    tenant TEXT NOT NULL,
    response_id TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error TEXT,
    next_attempt_at DOUBLE PRECISION,
    delivered_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    claimed_by TEXT,
    claimed_until DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (endpoint, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_tenant ON webhook_deliveries (tenant, id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_response ON webhook_deliveries (response_id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_finished ON webhook_deliveries (created_at)
    WHERE status <> 'pending';
"""

#: schema version 1 → 2 → 3 (idempotent; run under the schema lock): the model column, filled
#: in from the stored bodies, and the resume column; then `LISTING_INDEXES`
MIGRATE = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'responses' AND column_name = 'model') THEN
        ALTER TABLE responses ADD COLUMN model TEXT;
        UPDATE responses SET model = convert_from(body, 'UTF8')::jsonb ->> 'model';
    END IF;
END $$;
DO $$ BEGIN
    -- schema 3: backend checkpoints (checked first: ALTER locks the table even when it adds nothing)
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'responses' AND column_name = 'resume') THEN
        ALTER TABLE responses ADD COLUMN resume BYTEA;
    END IF;
END $$;
"""

_COLUMN_NAMES = (
    "id, tenant, status, background, body, input_items, request, created_at, last_seq, "
    "cancel_requested, lease_owner, lease_expires, attempts, events_purged, resume"
).split(", ")


def _columns(table: str = "responses") -> str:
    """A record's columns of `table` (its name or alias), `last_seq` as `last_seq_sql`."""
    return ", ".join(f"{last_seq_sql(table)} AS last_seq" if c == "last_seq" else f"{table}.{c}" for c in _COLUMN_NAMES)


_COLUMNS = _columns()
_LAST_SEQ = last_seq_sql()

_INSERT_DELIVERIES = (
    f"INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS})"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
    " $8::int[], $9::int[], $10::text[], $11::float8[], $12::float8[], $13::float8[])"
)


async def _insert_deliveries(c: _Conn, rows: list[tuple[Any, ...]]) -> None:
    """Outbox rows (from `Fanout.rows`) in one statement, and a wake-up for dispatchers
    (delivered at commit)."""
    await c.execute(_INSERT_DELIVERIES, *(list(col) for col in zip(*rows, strict=True)))
    await c.execute(f"NOTIFY {WEBHOOKS_CHANNEL}")


_INSERT_EVENTS = (
    "INSERT INTO events (response_id, seq, type, data)"
    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[])"
)

# one statement updates every row a write() touched, and notifies followers of those that
# gained events or finished (delivered at commit)
_APPLY_WRITES = f"""
WITH w AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[], $5::boolean[], $7::bytea[], $8::boolean[])
        AS w(id, finish, body, last_seq, notify, resume, touch)
), u AS (
    UPDATE responses r SET
        status = COALESCE(w.finish, r.status),
        body = COALESCE(w.body, r.body),
        last_seq = w.last_seq,
        lease_owner = CASE WHEN w.finish IS NULL THEN r.lease_owner END,
        lease_expires = CASE WHEN w.finish IS NULL THEN r.lease_expires END,
        resume = CASE WHEN w.finish IS NULL THEN COALESCE(w.resume, r.resume) END,
        updated_at = $6
    FROM w
    WHERE r.id = w.id AND w.touch
)
SELECT pg_notify('{EVENTS_CHANNEL}', id || ':' || last_seq) FROM w WHERE notify
"""

#: retried whole (the transaction was rolled back, nothing was applied)
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
#: how many event-log positions the listener remembers (see `wait_for_events`)
_NOTIFIED_CAP = 10_000


#: what a poll needs: no input items, no run request (they can be large), body not decoded
_SLIM_COLUMNS = (
    f"id, tenant, status, background, body, NULL::bytea, NULL::bytea, created_at, {_LAST_SEQ} AS last_seq, "
    "cancel_requested, lease_owner, lease_expires, attempts, events_purged, NULL::bytea"
)


def _record(row: asyncpg.Record) -> ResponseRecord:
    full = row[5] is not None
    return ResponseRecord(
        id=row[0],
        tenant=row[1],
        status=row[2],
        background=row[3],
        body=orjson.loads(row[4]) if full else {},
        input_items=orjson.loads(row[5]) if full else [],
        request=orjson.loads(row[6]) if full else {},
        created_at=row[7],
        last_seq=row[8],
        cancel_requested=row[9],
        lease_owner=row[10],
        lease_expires=row[11],
        attempts=row[12],
        events_purged=row[13],
        body_json=None if full else bytes(row[4]),
        resume=None if row[14] is None else orjson.loads(row[14]),
    )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Rejected(Exception):
    """A write's events collided with stored ones (slow path only)."""


class PostgresStore(Store):
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        query = parse_qs(urlsplit(url).query)
        self._schema = query["search_path"][-1].split(",")[0].strip() if "search_path" in query else None
        self._server_settings = {} if "application_name" in query else {"application_name": "bgmode"}
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._closing = asyncio.Event()
        self._event_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._work_waiters: set[asyncio.Future[None]] = set()
        self._webhook_waiters: set[asyncio.Future[None]] = set()
        #: the highest sequence number notified per response (recent ones only)
        self._notified: OrderedDict[str, int] = OrderedDict()
        self._work_noticed = 0.0
        self._claim_started = 0.0

    # -- plumbing -------------------------------------------------------------------------

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open")
        return self._pool

    @property
    def listening(self) -> bool:
        """Whether notifications are being received (else waits fall back to short polls)."""
        return self._listening

    async def _connect(self, role: str = "") -> asyncpg.Connection:
        settings = self._server_settings
        if role and "application_name" in settings:
            settings = {**settings, "application_name": f"{settings['application_name']}-{role}"}
        return await asyncpg.connect(self.url, server_settings=settings, timeout=30)

    async def open(self) -> None:
        conn = await self._connect()
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                if (
                    self._schema
                    and await conn.fetchval("SELECT to_regnamespace($1)", _quote_ident(self._schema)) is None
                ):
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(self._schema)}")
                await conn.execute(SCHEMA)
                version = await conn.fetchval("SELECT max(version) FROM bgmode_schema")
                if version is not None and version > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"the database has bgmode schema version {version}; this bgmode knows {SCHEMA_VERSION}: upgrade it"
                    )
                await conn.execute(MIGRATE)
                await conn.execute(LISTING_INDEXES)
                if version is None:
                    await conn.execute("INSERT INTO bgmode_schema (version) VALUES ($1)", SCHEMA_VERSION)
                elif version < SCHEMA_VERSION:
                    await conn.execute("UPDATE bgmode_schema SET version = $1", SCHEMA_VERSION)
        finally:
            await conn.close()
        self._closing.clear()
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            server_settings=self._server_settings,
            timeout=30,
        )
        try:
            listen_conn = await self._listen_connect()
        except BaseException:
            pool, self._pool = self._pool, None
            await pool.close()
            raise
        self._listener = asyncio.create_task(self._listen_loop(listen_conn), name="bgmode-pg-listen")

    async def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except TimeoutError:
                pool.terminate()
        self._wake_all()

    async def _listen_connect(self) -> asyncpg.Connection:
        conn = await self._connect("listen")
        await conn.add_listener(WORK_CHANNEL, self._on_work)
        await conn.add_listener(EVENTS_CHANNEL, self._on_events)
        await conn.add_listener(WEBHOOKS_CHANNEL, self._on_webhooks)
        self._listening = True
        return conn

    async def _listen_loop(self, conn: asyncpg.Connection | None) -> None:
        """Keep the LISTEN connection alive; reconnect (and wake every waiter) when it drops."""
        try:
            while not self._closing.is_set():
                if conn is None:
                    try:
                        conn = await self._listen_connect()
                    except Exception as exc:  # keep trying: waits poll meanwhile
                        log.warning("LISTEN connection failed (%s: %s); retrying", type(exc).__name__, exc)
                        await asyncio.sleep(1.0)
                        continue
                    self._wake_all()  # notifications may have been missed meanwhile
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 30)
                        break
                    try:  # a silent network loss shows up here
                        await conn.fetchval("SELECT 1", timeout=10)
                    except Exception:
                        break
                self._listening = False
                with contextlib.suppress(Exception):
                    conn.terminate()
                conn = None
                self._wake_all()
        finally:
            self._listening = False
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)

    def _on_work(self, _conn: object, _pid: int, _channel: str, _payload: object) -> None:
        self._work_noticed = time.monotonic()
        waiters, self._work_waiters = self._work_waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _on_webhooks(self, _conn: object, _pid: int, _channel: str, _payload: object) -> None:
        waiters, self._webhook_waiters = self._webhook_waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _on_events(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        rid, _, seq = str(payload).rpartition(":")
        try:
            last = int(seq)
        except ValueError:
            rid, last = str(payload), -1
        if last > self._notified.get(rid, -1):
            self._notified[rid] = last
        self._notified.move_to_end(rid)
        while len(self._notified) > _NOTIFIED_CAP:
            self._notified.popitem(last=False)
        for fut in self._event_waiters.pop(rid, ()):
            if not fut.done():
                fut.set_result(None)

    def _wake_all(self) -> None:
        waiters = [f for fs in self._event_waiters.values() for f in fs] + list(self._work_waiters)
        waiters += list(self._webhook_waiters)
        self._event_waiters.clear()
        self._work_waiters = set()
        self._webhook_waiters = set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _tx(self, fn: Callable[[_Conn], Awaitable[T]]) -> T:
        """Run `fn` in a transaction; retried when PostgreSQL rolled it back (deadlock, serialization)."""
        for attempt in range(5):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    return await fn(conn)
            except _RETRYABLE:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    # -- the contract ---------------------------------------------------------------------

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1", timeout=5)

    async def create(
        self,
        record: ResponseRecord,
        events: list[StoredEvent],
        idempotency_key: str | None = None,
        *,
        max_queued: int = 0,
        max_queued_tenant: int = 0,
    ) -> ResponseRecord:
        body = record.body_json or orjson.dumps(record.body)
        items = orjson.dumps(record.input_items)
        req = orjson.dumps(record.request)
        last_seq = events[-1].seq if events else -1
        model = record.body.get("model") if record.body else None
        if not isinstance(model, str):
            model = None

        async def run(c: _Conn) -> ResponseRecord | None:
            if max_queued or max_queued_tenant:
                if idempotency_key is not None:  # a repeat gets its response, full queue or not
                    row = await c.fetchrow(
                        f"SELECT {_COLUMNS} FROM responses WHERE tenant = $1 AND idempotency_key = $2",
                        record.tenant,
                        idempotency_key,
                    )
                    if row is not None:
                        return _record(row)
                await self._check_queue(c, record.tenant, max_queued, max_queued_tenant)
            inserted = await c.fetchval(
                "INSERT INTO responses (id, tenant, status, background, body, input_items, request, created_at,"
                " updated_at, last_seq, lease_owner, lease_expires, attempts, idempotency_key, model)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                " ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
                " RETURNING id",
                record.id,
                record.tenant,
                record.status,
                record.background,
                body,
                items,
                req,
                record.created_at,
                time.time(),
                last_seq,
                record.lease_owner,
                record.lease_expires,
                record.attempts,
                idempotency_key,
                model,
            )
            if inserted is None:  # the key was used: the stored response wins
                row = await c.fetchrow(
                    f"SELECT {_COLUMNS} FROM responses WHERE tenant = $1 AND idempotency_key = $2",
                    record.tenant,
                    idempotency_key,
                )
                assert row is not None
                return _record(row)
            if events:
                await c.execute(
                    _INSERT_EVENTS,
                    [record.id] * len(events),
                    [e.seq for e in events],
                    [e.type for e in events],
                    [e.data for e in events],
                )
            if record.status == Status.QUEUED:
                await c.execute(f"NOTIFY {WORK_CHANNEL}")
            return None

        existing = await self._tx(run)
        if existing is not None:
            return existing
        record.last_seq = last_seq
        return record

    async def _check_queue(self, c: _Conn, tenant: str, max_queued: int, max_queued_tenant: int) -> None:
        """Raise `QueueFull` if a limit is reached. Creates with limits take transaction-scoped
        advisory locks first (the whole queue's, then the tenant's), so each counts only after
        the previous one committed: concurrent creates never overshoot a limit. Creates without
        limits take no lock."""
        total, mine = 0, None
        if max_queued:
            await c.execute("SELECT pg_advisory_xact_lock($1)", _QUEUE_LOCK)
            total = await c.fetchval("SELECT count(*) FROM responses WHERE status = 'queued'")
        if max_queued_tenant:
            await c.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _TENANT_QUEUE_LOCK, tenant)
            mine = await c.fetchval("SELECT count(*) FROM responses WHERE tenant = $1 AND status = 'queued'", tenant)
        refused = queue_full(total, mine, max_queued, max_queued_tenant)
        if refused is not None:
            raise refused

    async def get(self, response_id: str, full: bool = True) -> ResponseRecord | None:
        cols = _COLUMNS if full else _SLIM_COLUMNS
        row = await self.pool.fetchrow(f"SELECT {cols} FROM responses WHERE id = $1", response_id)
        return None if row is None else _record(row)

    async def delete(self, response_id: str) -> bool:
        async def run(c: _Conn) -> bool:
            n = await c.fetchval(
                "WITH d AS (DELETE FROM responses WHERE id = $1 RETURNING 1) SELECT count(*) FROM d", response_id
            )
            await c.execute("DELETE FROM events WHERE response_id = $1", response_id)
            return bool(n)

        return await self._tx(run)

    async def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[ResponseRecord]:
        self._claim_started = time.monotonic()
        now = time.time()

        async def run(c: _Conn) -> list[asyncpg.Record]:
            return await c.fetch(
                # MATERIALIZED: the planner may not rerun a LIMIT ... SKIP LOCKED subquery per row
                "WITH picked AS MATERIALIZED (SELECT id FROM responses WHERE status = 'queued'"
                " ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)"
                " UPDATE responses r SET status = 'in_progress', lease_owner = $1, lease_expires = $2,"
                " attempts = r.attempts + 1, updated_at = $3"
                " FROM picked WHERE r.id = picked.id"
                f" RETURNING {_columns('r')}",
                worker_id,
                now + lease_seconds,
                now,
                limit,
            )

        rows = await self._tx(run)
        return sorted((_record(r) for r in rows), key=lambda r: r.created_at)

    async def heartbeat(self, worker_id: str, lease_seconds: float, response_ids: list[str]) -> list[str]:
        async def run(c: _Conn) -> list[asyncpg.Record]:
            # rows locked in id order, like write(): the two never deadlock
            return await c.fetch(
                "WITH mine AS MATERIALIZED (SELECT id FROM responses WHERE lease_owner = $2"
                " AND status = 'in_progress' AND id = ANY($3::text[]) ORDER BY id FOR UPDATE)"
                " UPDATE responses r SET lease_expires = $1 FROM mine WHERE r.id = mine.id"
                " RETURNING r.id, r.cancel_requested",
                time.time() + lease_seconds,
                worker_id,
                response_ids,
            )

        rows = await self._tx(run)
        return sorted(r[0] for r in rows if r[1])

    async def write(self, worker_id: str, writes: list[Write]) -> list[WriteResult]:
        if not writes:
            return []
        bodies = [None if w.body is None else orjson.dumps(w.body) for w in writes]
        try:
            return await self._tx(lambda c: self._write(c, worker_id, writes, bodies, careful=False))
        except asyncpg.UniqueViolationError:
            # events beyond a response's last_seq were already stored (not by this store's
            # writes): redo the batch with one savepoint per write, to find the culprits
            log.warning("event insert collided; retrying %d writes one by one", len(writes))
            return await self._tx(lambda c: self._write(c, worker_id, writes, bodies, careful=True))

    async def _write(
        self,
        c: _Conn,
        worker_id: str,
        writes: list[Write],
        bodies: list[bytes | None],
        careful: bool,
    ) -> list[WriteResult]:
        rows = await c.fetch(
            f"SELECT id, lease_owner, status, cancel_requested, {_LAST_SEQ}, tenant FROM responses"
            " WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
            list({w.response_id for w in writes}),
        )
        # the rows as they will be after each accepted write, to judge the next ones in order
        state: dict[str, list[Any]] = {r[0]: [r[1], r[2], r[3], r[4]] for r in rows}
        results: list[WriteResult] = []
        ev_ids: list[str] = []
        ev_seqs: list[int] = []
        ev_types: list[str] = []
        ev_data: list[bytes] = []
        # per response: [finish, body, last_seq, notify, resume, touch], merged over its accepted
        # writes; touch: the row changes (events alone leave it be, see `last_seq_sql`)
        changes: dict[str, list[Any]] = {}
        appends: list[tuple[str, ConversationAppend]] = []
        for w, body in zip(writes, bodies, strict=True):
            st = state.get(w.response_id)
            if st is None or st[0] != worker_id or st[1] != Status.IN_PROGRESS:
                results.append(WriteResult.FENCED)
                continue
            if w.finish is not None and st[2] and not w.force and w.finish != Status.CANCELLED:
                results.append(WriteResult.CANCEL_REQUESTED)
                continue
            seqs = [e.seq for e in w.events]
            if seqs and (seqs[0] != st[3] + 1 or any(b != a + 1 for a, b in zip(seqs, seqs[1:], strict=False))):
                # a second writer, a replayed batch, or a gap: the log stays 0..n
                log.warning(
                    "write to %s refused: sequence numbers %d.. do not follow %d", w.response_id, seqs[0], st[3]
                )
                results.append(WriteResult.FENCED)
                continue
            if careful and seqs:
                try:
                    async with c.transaction():
                        await c.execute(
                            _INSERT_EVENTS,
                            [w.response_id] * len(seqs),
                            seqs,
                            [e.type for e in w.events],
                            [e.data for e in w.events],
                        )
                except asyncpg.UniqueViolationError:
                    results.append(WriteResult.FENCED)
                    continue
            elif seqs:
                ev_ids.extend([w.response_id] * len(seqs))
                ev_seqs.extend(seqs)
                ev_types.extend(e.type for e in w.events)
                ev_data.extend(e.data for e in w.events)
            ch = changes.setdefault(w.response_id, [None, None, st[3], False, None, False])
            if w.resume is not None:
                ch[4] = orjson.dumps(w.resume)
                ch[5] = True
            if seqs:
                st[3] = ch[2] = seqs[-1]
                ch[3] = True
            if body is not None:
                ch[1] = body
                ch[5] = True
            if w.finish is not None:
                st[0], st[1] = None, w.finish
                ch[0] = w.finish
                ch[3] = ch[5] = True
                if w.conversation is not None:
                    appends.append((w.response_id, w.conversation))
            results.append(WriteResult.OK)
        if ev_ids:
            await c.execute(_INSERT_EVENTS, ev_ids, ev_seqs, ev_types, ev_data)
        if changes:
            ids = list(changes)
            await c.execute(
                _APPLY_WRITES,
                ids,
                [changes[i][0] for i in ids],
                [changes[i][1] for i in ids],
                [changes[i][2] for i in ids],
                [changes[i][3] for i in ids],
                time.time(),
                [changes[i][4] for i in ids],
                [changes[i][5] for i in ids],
            )
        # the turns' items, with their terminal writes (conversation rows locked in id order)
        for rid, conv in sorted(appends, key=lambda a: a[1].conversation_id):
            await _conv_append(c, conv.conversation_id, rid, conv.items)
        fanout = self._fanout
        if fanout.targets:  # the webhook outbox, in the same transaction
            tenants = {r[0]: r[5] for r in rows}
            now = time.time()
            outbox = [
                d
                for rid, ch in changes.items()
                if ch[0] is not None
                for d in fanout.rows(rid, tenants[rid], ch[0], now)
            ]
            if outbox:
                await _insert_deliveries(c, outbox)
        return results

    async def cancel_queued(self, response_id: str, body: dict[str, Any], events: list[StoredEvent]) -> bool:
        data = orjson.dumps(body)
        first = events[0].seq if events else 0
        last = events[-1].seq if events else -1

        fanout = self._fanout

        async def run(c: _Conn) -> bool:
            now = time.time()
            tenant = await c.fetchval(
                "UPDATE responses SET status = 'cancelled', body = $1, last_seq = $2, updated_at = $3"
                " WHERE id = $4 AND status = 'queued' AND last_seq = $5 RETURNING tenant",
                data,
                last,
                now,
                response_id,
                first - 1,
            )
            if tenant is None:
                return False
            outbox = fanout.rows(response_id, tenant, Status.CANCELLED.value, now)
            if outbox:
                await _insert_deliveries(c, outbox)
            if events:
                await c.execute(
                    _INSERT_EVENTS,
                    [response_id] * len(events),
                    [e.seq for e in events],
                    [e.type for e in events],
                    [e.data for e in events],
                )
            await c.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, f"{response_id}:{last}")
            return True

        return await self._tx(run)

    async def request_cancel(self, response_id: str) -> bool:
        n = await self.pool.fetchval(
            "WITH u AS (UPDATE responses SET cancel_requested = TRUE WHERE id = $1 AND status = 'in_progress'"
            " RETURNING 1) SELECT count(*) FROM u",
            response_id,
        )
        return bool(n)

    async def takeover(
        self, response_id: str, worker_id: str, lease_seconds: float, owner: str | None = None
    ) -> ResponseRecord | None:
        now = time.time()
        cond = "(lease_expires IS NULL OR lease_expires < $3)" if owner is None else "lease_owner = $5"
        args: list[Any] = [worker_id, now + lease_seconds, now, response_id]
        if owner is not None:
            args.append(owner)
        row = await self.pool.fetchrow(
            "UPDATE responses SET lease_owner = $1, lease_expires = $2, updated_at = $3"
            f" WHERE id = $4 AND status = 'in_progress' AND {cond}"
            f" RETURNING {_COLUMNS}",
            *args,
        )
        return None if row is None else _record(row)

    async def release(self, response_id: str, worker_id: str) -> bool:
        async def run(c: _Conn) -> bool:
            n = await c.fetchval(
                f"WITH u AS (UPDATE responses SET status = 'queued', last_seq = {_LAST_SEQ}, lease_owner = NULL,"
                " lease_expires = NULL,"
                " updated_at = $1 WHERE id = $2 AND lease_owner = $3 AND status = 'in_progress' RETURNING 1)"
                " SELECT count(*) FROM u",
                time.time(),
                response_id,
                worker_id,
            )
            if n:
                await c.execute(f"NOTIFY {WORK_CHANNEL}")
            return bool(n)

        return await self._tx(run)

    async def leased(self, owner_prefix: str, limit: int) -> list[ResponseRecord]:
        rows = await self.pool.fetch(
            f"SELECT {_SLIM_COLUMNS} FROM responses WHERE lease_owner IS NOT NULL AND status = 'in_progress'"
            " AND left(lease_owner, $1) = $2 LIMIT $3",
            len(owner_prefix),
            owner_prefix,
            limit,
        )
        return [_record(r) for r in rows]

    async def expired(self, limit: int) -> list[ResponseRecord]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM responses WHERE lease_owner IS NOT NULL AND status = 'in_progress'"
            " AND lease_expires < $1 LIMIT $2",
            time.time(),
            limit,
        )
        return [_record(r) for r in rows]

    async def events_after(self, response_id: str, after: int, limit: int = 1000) -> list[StoredEvent]:
        rows = await self.pool.fetch(
            "SELECT seq, type, data FROM events WHERE response_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            response_id,
            after,
            limit,
        )
        return [StoredEvent(r[0], r[1], r[2]) for r in rows]

    async def secret(self, name: str, value: bytes) -> bytes:
        await self.pool.execute(
            "INSERT INTO bgmode_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name, value
        )
        stored = await self.pool.fetchval("SELECT value FROM bgmode_secrets WHERE name = $1", name)
        return bytes(stored)

    async def count_queued(self, tenant: str | None = None) -> int:
        if tenant is None:
            n = await self.pool.fetchval("SELECT count(*) FROM responses WHERE status = 'queued'")
        else:
            n = await self.pool.fetchval(
                "SELECT count(*) FROM responses WHERE status = 'queued' AND tenant = $1", tenant
            )
        return int(n)

    async def list_responses(
        self,
        tenant: str,
        *,
        status: str | None = None,
        model: str | None = None,
        after: str | None = None,
        order: str = "desc",
        limit: int = 20,
    ) -> list[ResponseRecord]:
        sql, args = listing_query(tenant, status, model, after, order, limit, _SLIM_COLUMNS, "$")
        return [_record(r) for r in await self.pool.fetch(sql, *args)]

    async def status_counts(self, tenant: str | None = None) -> dict[str, int]:
        sql, args = status_counts_query(tenant, "$")
        rows = await self.pool.fetch(sql, *args)
        counts = dict.fromkeys((s.value for s in Status), 0)
        counts.update({r[0]: int(r[1]) for r in rows})
        return counts

    async def lease_owners(self) -> list[tuple[str, int, float]]:
        rows = await self.pool.fetch(
            "SELECT lease_owner, count(*), max(lease_expires) FROM responses"
            " WHERE lease_owner IS NOT NULL AND status = 'in_progress' GROUP BY lease_owner ORDER BY lease_owner"
        )
        return [(r[0], int(r[1]), float(r[2] or 0.0)) for r in rows]

    async def sweep(self, responses_before: float, events_before: float, limit: int) -> tuple[int, int]:
        terminal = sorted(TERMINAL_VALUES)

        async def run(c: _Conn) -> tuple[int, int]:
            # SKIP LOCKED: sweepers in several processes take disjoint rows and never wait
            gone = await c.fetch(
                "WITH old AS MATERIALIZED (SELECT id FROM responses WHERE updated_at < $1"
                " AND status = ANY($2::text[]) LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " DELETE FROM responses r USING old WHERE r.id = old.id RETURNING r.id",
                responses_before,
                terminal,
                limit,
            )
            if gone:
                await c.execute("DELETE FROM events WHERE response_id = ANY($1::text[])", [r[0] for r in gone])
            purged = await c.fetch(
                "WITH old AS MATERIALIZED (SELECT id FROM responses WHERE updated_at < $1"
                " AND status = ANY($2::text[]) AND NOT events_purged LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " UPDATE responses r SET events_purged = TRUE FROM old WHERE r.id = old.id RETURNING r.id",
                events_before,
                terminal,
                limit,
            )
            if purged:
                await c.execute("DELETE FROM events WHERE response_id = ANY($1::text[])", [r[0] for r in purged])
            # finished webhook deliveries go with the responses' retention (pending ones stay
            # until they are delivered or given up)
            await c.execute(
                "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries"
                " WHERE status <> 'pending' AND created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                responses_before,
                limit,
            )
            return len(gone), len(purged)

        return await self._tx(run)

    # -- webhooks -------------------------------------------------------------------------

    async def wait_for_webhooks(self, timeout: float) -> None:
        if not self._listening:
            await asyncio.sleep(min(timeout, 1.0))
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._webhook_waiters.add(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout)
        finally:
            if not fut.done():
                fut.cancel()
            self._webhook_waiters.discard(fut)

    async def webhook_claim(self, endpoint: str, owner: str, limit: int, lease_seconds: float) -> list[DeliveryRecord]:
        now = time.time()
        cols = ", ".join(f"d.{c.strip()}" for c in DELIVERY_COLUMNS.split(","))

        async def run(c: _Conn) -> list[asyncpg.Record]:
            # SKIP LOCKED: dispatchers in several processes take disjoint rows and never wait;
            # the claim (claimed_until) keeps a row from a second sender after this commits
            return await c.fetch(
                "WITH picked AS MATERIALIZED (SELECT id FROM webhook_deliveries WHERE endpoint = $3"
                " AND status = 'pending' AND next_attempt_at <= $4 AND (claimed_until IS NULL OR claimed_until < $4)"
                " ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED)"
                " UPDATE webhook_deliveries d SET claimed_by = $1, claimed_until = $2"
                f" FROM picked WHERE d.id = picked.id RETURNING {cols}",
                owner,
                now + lease_seconds,
                endpoint,
                now,
                limit,
            )

        rows = await self._tx(run)
        return sorted((DeliveryRecord(*r) for r in rows), key=lambda d: d.next_attempt_at or 0.0)

    async def webhook_result(
        self,
        delivery_id: str,
        owner: str,
        *,
        status: str,
        status_code: int | None,
        error: str | None,
        next_attempt_at: float | None,
    ) -> bool:
        n = await self.pool.fetchval(
            "WITH u AS (UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, last_status_code = $2,"
            " last_error = $3, next_attempt_at = $4, delivered_at = $5, claimed_by = NULL, claimed_until = NULL"
            " WHERE id = $6 AND claimed_by = $7 AND status = 'pending' RETURNING 1) SELECT count(*) FROM u",
            status,
            status_code,
            error,
            next_attempt_at,
            time.time() if status == "delivered" else None,
            delivery_id,
            owner,
        )
        return bool(n)

    async def webhook_next_due(self, endpoints: list[str]) -> float | None:
        if not endpoints:
            return None
        due = await self.pool.fetchval(
            "SELECT min(greatest(next_attempt_at, coalesce(claimed_until, 0))) FROM webhook_deliveries"
            " WHERE status = 'pending' AND endpoint = ANY($1::text[])",
            endpoints,
        )
        return None if due is None else float(due)

    async def webhook_deliveries(
        self,
        tenant: str | None,
        *,
        response_id: str | None = None,
        status: str | None = None,
        after: str | None = None,
        limit: int = 20,
    ) -> list[DeliveryRecord]:
        where: list[str] = []
        args: list[Any] = []
        for col, op, value in (
            ("tenant", "=", tenant),
            ("response_id", "=", response_id),
            ("status", "=", status),
            ("id", "<", after),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{col} {op} ${len(args)}")
        args.append(max(0, int(limit)))
        sql = f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self.pool.fetch(f"{sql} ORDER BY id DESC LIMIT ${len(args)}", *args)
        return [DeliveryRecord(*r) for r in rows]

    # -- conversations --------------------------------------------------------------------

    async def conversation_create(self, conv: ConversationRecord, items: list[dict[str, Any]]) -> None:
        async def run(c: _Conn) -> None:
            await c.execute(
                "INSERT INTO conversations (id, tenant, created_at, updated_at, metadata) VALUES ($1, $2, $3, $4, $5)",
                conv.id,
                conv.tenant,
                conv.created_at,
                time.time(),
                orjson.dumps(conv.metadata),
            )
            await _conv_append(c, conv.id, None, items)

        await self._tx(run)

    async def conversation_get(self, conversation_id: str) -> ConversationRecord | None:
        row = await self.pool.fetchrow(
            "SELECT id, tenant, created_at, metadata FROM conversations WHERE id = $1", conversation_id
        )
        return None if row is None else ConversationRecord(row[0], row[1], row[2], orjson.loads(row[3]))

    async def conversation_update(self, conversation_id: str, metadata: dict[str, str]) -> ConversationRecord | None:
        row = await self.pool.fetchrow(
            "UPDATE conversations SET metadata = $1, updated_at = $2 WHERE id = $3 RETURNING id, tenant, created_at",
            orjson.dumps(metadata),
            time.time(),
            conversation_id,
        )
        return None if row is None else ConversationRecord(row[0], row[1], row[2], dict(metadata))

    async def conversation_delete(self, conversation_id: str) -> bool:
        async def run(c: _Conn) -> bool:
            n = await c.fetchval(
                "WITH d AS (DELETE FROM conversations WHERE id = $1 RETURNING 1) SELECT count(*) FROM d",
                conversation_id,
            )
            await c.execute("DELETE FROM conversation_items WHERE conversation_id = $1", conversation_id)
            return bool(n)

        return await self._tx(run)

    async def conversation_add(self, conversation_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        return await self._tx(lambda c: _conv_append(c, conversation_id, None, items))

    async def conversation_items(
        self, conversation_id: str, after: str | None, limit: int, order: str
    ) -> tuple[list[dict[str, Any]], bool] | None:
        async with self.pool.acquire() as c:
            if await c.fetchval("SELECT 1 FROM conversations WHERE id = $1", conversation_id) is None:
                return None
            start = -1 if order == "asc" else 1 << 62
            if after is not None:
                pos = await c.fetchval(
                    "SELECT pos FROM conversation_items WHERE conversation_id = $1 AND item_id = $2",
                    conversation_id,
                    after,
                )
                if pos is None:
                    return None
                start = pos
            cmp, direction = (">", "ASC") if order == "asc" else ("<", "DESC")
            rows = await c.fetch(
                f"SELECT data FROM conversation_items WHERE conversation_id = $1 AND pos {cmp} $2"
                f" ORDER BY pos {direction} LIMIT $3",
                conversation_id,
                start,
                limit + 1,
            )
        return [orjson.loads(r[0]) for r in rows[:limit]], len(rows) > limit

    async def conversation_item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        data = await self.pool.fetchval(
            "SELECT data FROM conversation_items WHERE conversation_id = $1 AND item_id = $2", conversation_id, item_id
        )
        return None if data is None else dict(orjson.loads(data))

    async def conversation_item_delete(self, conversation_id: str, item_id: str) -> bool:
        async def run(c: _Conn) -> bool:
            n = await c.fetchval(
                "WITH d AS (DELETE FROM conversation_items WHERE conversation_id = $1 AND item_id = $2 RETURNING 1)"
                " SELECT count(*) FROM d",
                conversation_id,
                item_id,
            )
            if n:
                await c.execute("UPDATE conversations SET updated_at = $1 WHERE id = $2", time.time(), conversation_id)
            return bool(n)

        return await self._tx(run)

    async def conversation_begin(
        self, conversation_id: str, tenant: str, response_id: str, hold_until: float
    ) -> list[dict[str, Any]] | None:
        async def run(c: _Conn) -> list[dict[str, Any]] | None:
            row = await c.fetchrow(
                "SELECT tenant, active_response, active_until FROM conversations WHERE id = $1 FOR UPDATE",
                conversation_id,
            )
            if row is None or row[0] != tenant:
                return None
            now = time.time()
            if row[1] is not None and row[1] != response_id:
                st = await c.fetchval("SELECT status FROM responses WHERE id = $1", row[1])
                if (st is not None and st not in TERMINAL_VALUES) or (st is None and (row[2] or 0) > now):
                    raise ConversationLocked(row[1])
            await c.execute(
                "UPDATE conversations SET active_response = $1, active_until = $2, updated_at = $3 WHERE id = $4",
                response_id,
                hold_until,
                now,
                conversation_id,
            )
            rows = await c.fetch(
                "SELECT data FROM conversation_items WHERE conversation_id = $1 ORDER BY pos", conversation_id
            )
            return [orjson.loads(r[0]) for r in rows]

        return await self._tx(run)

    async def conversation_end(self, conversation_id: str, response_id: str, items: list[dict[str, Any]]) -> None:
        await self._tx(lambda c: _conv_append(c, conversation_id, response_id, items))

    async def conversation_sweep(self, before: float, limit: int) -> int:
        async def run(c: _Conn) -> int:
            gone = await c.fetch(
                "WITH old AS MATERIALIZED (SELECT id FROM conversations WHERE updated_at < $1"
                " LIMIT $2 FOR UPDATE SKIP LOCKED)"
                " DELETE FROM conversations v USING old WHERE v.id = old.id RETURNING v.id",
                before,
                limit,
            )
            if gone:
                await c.execute(
                    "DELETE FROM conversation_items WHERE conversation_id = ANY($1::text[])", [r[0] for r in gone]
                )
            return len(gone)

        return await self._tx(run)

    # -- wake-ups -------------------------------------------------------------------------

    async def wait_for_events(self, response_id: str, after: int, timeout: float) -> None:
        if not self._listening:  # no notifications right now: poll
            await asyncio.sleep(min(timeout, 0.05))
            return
        # a notification that arrived while the caller was reading is not lost
        if self._notified.get(response_id, -1) > after:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._event_waiters.setdefault(response_id, set())
        waiters.add(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout)
        finally:
            if not fut.done():
                fut.cancel()
            left = self._event_waiters.get(response_id)
            if left is not None:
                left.discard(fut)
                if not left:
                    del self._event_waiters[response_id]

    async def wait_for_work(self, timeout: float) -> None:
        if not self._listening:
            await asyncio.sleep(min(timeout, 0.5))
            return
        # work announced after the last claim began may not have been seen by it
        if self._work_noticed > self._claim_started:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._work_waiters.add(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout)
        finally:
            if not fut.done():
                fut.cancel()
            self._work_waiters.discard(fut)


async def _conv_append(
    c: _Conn, conversation_id: str, response_id: str | None, items: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """Append `items` to a conversation (ids made unique in it) and, for `response_id`, end
    its turn; None if the conversation does not exist."""
    pos = await c.fetchval("SELECT next_pos FROM conversations WHERE id = $1 FOR UPDATE", conversation_id)
    if pos is None:
        return None
    ids = [str(it.get("id")) for it in items if it.get("id")]
    taken: set[str] = set()
    if ids:
        rows = await c.fetch(
            "SELECT item_id FROM conversation_items WHERE conversation_id = $1 AND item_id = ANY($2::text[])",
            conversation_id,
            ids,
        )
        taken = {r[0] for r in rows}
    items = unique_ids(items, taken)
    if items:
        await c.execute(
            "INSERT INTO conversation_items (conversation_id, pos, item_id, data)"
            " SELECT $1, p, i, d FROM unnest($2::bigint[], $3::text[], $4::bytea[]) AS t(p, i, d)",
            conversation_id,
            [pos + i for i in range(len(items))],
            [it["id"] for it in items],
            [orjson.dumps(it) for it in items],
        )
    await c.execute(
        "UPDATE conversations SET next_pos = $1, updated_at = $2,"
        " active_until = CASE WHEN active_response = $3 THEN NULL ELSE active_until END,"
        " active_response = CASE WHEN active_response = $3 THEN NULL ELSE active_response END WHERE id = $4",
        pos + len(items),
        time.time(),
        response_id,
        conversation_id,
    )
    return items
