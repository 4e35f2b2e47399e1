"""SQLite store (the default): WAL, one writer process with group commit, pooled readers.

Why not aiosqlite: it runs each call as its own statement on its own thread, so every
token would be its own transaction. Here every write is a small function and its arguments
(`_w_*` below: plain data, so it pickles) handed to one writer *process*
(`sqlite_writer`), which runs all that are waiting in one transaction, commits once and
answers them all (if one write fails, the batch is rolled back and each write is run again
on its own). Under load, batches grow on their own: that is group commit. A process, not a
thread: a writer thread and the event loop take turns on the GIL, so a busy server ran its
creates at the pace of one core (ARCHITECTURE, "The writer and the GIL"). Reads run in this
process on a small pool of threads with their own connections (WAL lets them read while the
writer writes). Nothing here ever blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from bgmode.records import TERMINAL_VALUES, ResponseRecord, Status, StoredEvent
from bgmode.store.base import (
    DELIVERY_COLUMNS,
    LISTING_INDEXES,
    ConversationAppend,
    ConversationLocked,
    ConversationRecord,
    DeliveryRecord,
    Fanout,
    QueueFull,
    Store,
    Write,
    WriteResult,
    last_seq_sql,
    listing_query,
    queue_full,
    status_counts_query,
    unique_ids,
)
from bgmode.store.sqlite_writer import WriterProcess, settle

T = TypeVar("T")

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    background INTEGER NOT NULL,
    body BLOB NOT NULL,
    input_items BLOB NOT NULL,
    request BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT -1,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    events_purged INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    model TEXT,
    resume BLOB
);
CREATE INDEX IF NOT EXISTS responses_leased ON responses (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS responses_updated ON responses (updated_at);
CREATE UNIQUE INDEX IF NOT EXISTS responses_idem ON responses (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    response_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (response_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    metadata BLOB NOT NULL,
    next_pos INTEGER NOT NULL DEFAULT 0,
    active_response TEXT,
    active_until REAL
);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_at);
CREATE TABLE IF NOT EXISTS conversation_items (
    conversation_id TEXT NOT NULL,
    pos INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (conversation_id, pos)
) WITHOUT ROWID;
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
    next_attempt_at REAL,
    delivered_at REAL,
    created_at REAL NOT NULL,
    claimed_by TEXT,
    claimed_until REAL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (endpoint, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_tenant ON webhook_deliveries (tenant, id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_response ON webhook_deliveries (response_id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_finished ON webhook_deliveries (created_at)
    WHERE status != 'pending';
"""


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an older bgmode up to this schema (idempotent)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(responses)").fetchall()}
    if "model" not in cols:
        conn.execute("BEGIN IMMEDIATE")
        try:
            cols = {r[1] for r in conn.execute("PRAGMA table_info(responses)").fetchall()}
            if "model" not in cols:  # another process may have migrated meanwhile
                conn.execute("ALTER TABLE responses ADD COLUMN model TEXT")
                conn.execute("UPDATE responses SET model = json_extract(CAST(body AS TEXT), '$.model')")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    if "resume" not in cols:  # schema 3: backend checkpoints
        conn.execute("BEGIN IMMEDIATE")
        try:
            if "resume" not in {r[1] for r in conn.execute("PRAGMA table_info(responses)").fetchall()}:
                conn.execute("ALTER TABLE responses ADD COLUMN resume BLOB")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    conn.executescript(LISTING_INDEXES)


_LAST_SEQ = last_seq_sql()
_COLUMNS = (
    f"id, tenant, status, background, body, input_items, request, created_at, {_LAST_SEQ} AS last_seq, "
    "cancel_requested, lease_owner, lease_expires, attempts, events_purged, resume"
)
#: what a poll needs: no input items, no run request (they can be large), body not decoded
_SLIM_COLUMNS = (
    f"id, tenant, status, background, body, NULL, NULL, created_at, {_LAST_SEQ} AS last_seq, "
    "cancel_requested, lease_owner, lease_expires, attempts, events_purged, NULL"
)
_MAX_BATCH = 512

_GET_FULL = f"SELECT {_COLUMNS} FROM responses WHERE id = ?"
_GET_SLIM = f"SELECT {_SLIM_COLUMNS} FROM responses WHERE id = ?"


def _record(row: tuple[Any, ...]) -> ResponseRecord:
    full = row[5] is not None
    return ResponseRecord(
        id=row[0],
        tenant=row[1],
        status=row[2],
        background=bool(row[3]),
        body=orjson.loads(row[4]) if full else {},
        input_items=orjson.loads(row[5]) if full else [],
        request=orjson.loads(row[6]) if full else {},
        created_at=row[7],
        last_seq=row[8],
        cancel_requested=bool(row[9]),
        lease_owner=row[10],
        lease_expires=row[11],
        attempts=row[12],
        events_purged=bool(row[13]),
        body_json=None if full else bytes(row[4]),
        resume=None if row[14] is None else orjson.loads(row[14]),
    )


def _model(record: ResponseRecord) -> str | None:
    model = record.body.get("model") if record.body else None
    return model if isinstance(model, str) else None


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _prepare(path: str) -> None:
    """Create or migrate the schema (before the writer process opens the file)."""
    conn = _connect(path)
    try:
        conn.executescript(SCHEMA)
        _migrate(conn)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    finally:
        conn.close()


def path_from_url(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` or `sqlite:///:memory:` → a path."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    path = url[len("sqlite://") :]
    if path.startswith("/"):
        path = path[1:]
    return path or "bgmode.db"


class SQLiteStore(Store):
    def __init__(self, path: str) -> None:
        self.path = path
        #: `:memory:`: a database in a temporary folder, gone at `close()` (the writer process
        #: and the readers need a file to share)
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._writer: WriterProcess | None = None
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bgmode-sqlite-read")
        #: one-row reads by primary key (polls): one thread, taken in batches (see `_point_loop`)
        self._points: queue.SimpleQueue[_Point | None]
        self._points = queue.SimpleQueue()
        self._point_reader: threading.Thread | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._webhook_waiters: set[asyncio.Future[None]] = set()

    # -- plumbing -------------------------------------------------------------------------

    async def open(self) -> None:
        if self.path == ":memory:":
            self._scratch = tempfile.TemporaryDirectory(prefix="bgmode-memory-")
            self.path = os.path.join(self._scratch.name, "bgmode.db")
        else:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
        await asyncio.to_thread(_prepare, self.path)
        self._writer = WriterProcess(self.path)
        await self._writer.start()
        self._point_reader = threading.Thread(target=self._point_loop, name="bgmode-sqlite-point", daemon=True)
        self._point_reader.start()

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._point_reader is not None:
            self._points.put(None)
            await asyncio.to_thread(self._point_reader.join)
            self._point_reader = None
        self._readers.shutdown(wait=True)
        with self._lock:
            for c in self._reader_conns:
                c.close()
            self._reader_conns.clear()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
            self.path = ":memory:"

    def _point_loop(self) -> None:
        """Runs one-row reads in batches: everything queued when the thread wakes, then one
        wake-up of the event loop for the lot. Under load that is one thread switch per batch
        rather than two per read (a pool's), and the read itself (microseconds, the rows
        cached) stays off the event loop."""
        conn = _connect(self.path)
        try:
            while True:
                batch, stop = _take(self._points)
                if not batch:
                    return
                results: list[tuple[bool, Any]] = []
                for fn, _ in batch:
                    try:
                        results.append((True, fn(conn)))
                    except Exception as exc:
                        results.append((False, exc))
                futs = [fut for _, fut in batch]
                futs[0].get_loop().call_soon_threadsafe(settle, futs, results)
                if stop:
                    return
        finally:
            conn.close()

    async def _point(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._points.put((fn, fut))
        return await fut

    def _write(self, op: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`op(connection, *args)`, run by the writer process in its next transaction."""
        if self._writer is None:
            raise sqlite3.ProgrammingError("the store is not open")
        return self._writer.submit(op, args)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader()))

    # -- the contract ---------------------------------------------------------------------

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    async def create(
        self,
        record: ResponseRecord,
        events: list[StoredEvent],
        idempotency_key: str | None = None,
        *,
        max_queued: int = 0,
        max_queued_tenant: int = 0,
    ) -> ResponseRecord:
        last_seq = events[-1].seq if events else -1
        row = (
            record.id,
            record.tenant,
            record.status,
            int(record.background),
            record.body_json or orjson.dumps(record.body),
            orjson.dumps(record.input_items),
            orjson.dumps(record.request),
            record.created_at,
            time.time(),
            last_seq,
            record.lease_owner,
            record.lease_expires,
            record.attempts,
            idempotency_key,
            _model(record),
        )
        rows = [(record.id, e.seq, e.type, e.data) for e in events]
        if idempotency_key is None and not max_queued and not max_queued_tenant:
            await self._write(_w_insert, row, rows)  # batched with the other plain creates of its round
        else:
            found = await self._write(
                _w_create_checked, row, rows, record.tenant, idempotency_key, max_queued, max_queued_tenant
            )
            if isinstance(found, QueueFull):
                raise found
            if found is not None:
                return _record(found)
        record.last_seq = last_seq
        return record

    async def get(self, response_id: str, full: bool = True) -> ResponseRecord | None:
        sql = _GET_FULL if full else _GET_SLIM
        row = await self._point(lambda c: c.execute(sql, (response_id,)).fetchone())
        return None if row is None else _record(row)

    async def delete(self, response_id: str) -> bool:
        return await self._write(_w_delete, response_id)

    async def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[ResponseRecord]:
        rows = await self._write(_w_claim, worker_id, limit, lease_seconds)
        return sorted((_record(r) for r in rows), key=lambda r: r.created_at)

    async def heartbeat(self, worker_id: str, lease_seconds: float, response_ids: list[str]) -> list[str]:
        return await self._write(_w_heartbeat, worker_id, lease_seconds, orjson.dumps(response_ids))

    async def write(self, worker_id: str, writes: list[Write]) -> list[WriteResult]:
        prepared = [
            (
                w.response_id,
                w.finish,
                w.force,
                w.conversation,
                None if w.body is None else orjson.dumps(w.body),
                [(w.response_id, e.seq, e.type, e.data) for e in w.events],
                None if w.resume is None else orjson.dumps(w.resume),
            )
            for w in writes
        ]
        results, queued = await self._write(_w_write, worker_id, prepared, self._fanout)
        if queued:
            self._wake_webhooks()
        return results

    async def cancel_queued(self, response_id: str, body: dict[str, Any], events: list[StoredEvent]) -> bool:
        rows = [(response_id, e.seq, e.type, e.data) for e in events]
        first = events[0].seq if events else 0
        done = await self._write(_w_cancel_queued, response_id, orjson.dumps(body), rows, first, self._fanout)
        if done and self._fanout.targets:
            self._wake_webhooks()
        return done

    # -- webhooks -------------------------------------------------------------------------

    def _wake_webhooks(self) -> None:
        waiters, self._webhook_waiters = self._webhook_waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_for_webhooks(self, timeout: float) -> None:
        # this process's terminal writes wake the dispatcher at once; another process's
        # are found by the dispatcher's bounded wait (SQLite has no notifications)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._webhook_waiters.add(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout)
        finally:
            if not fut.done():
                fut.cancel()
            self._webhook_waiters.discard(fut)

    async def webhook_claim(self, endpoint: str, owner: str, limit: int, lease_seconds: float) -> list[DeliveryRecord]:
        rows = await self._write(_w_webhook_claim, endpoint, owner, limit, lease_seconds)
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
        return await self._write(_w_webhook_result, delivery_id, owner, status, status_code, error, next_attempt_at)

    async def webhook_next_due(self, endpoints: list[str]) -> float | None:
        if not endpoints:
            return None
        marks = ",".join("?" * len(endpoints))
        row = await self._read(
            lambda c: c.execute(
                "SELECT min(max(next_attempt_at, coalesce(claimed_until, 0))) FROM webhook_deliveries"
                f" WHERE status = 'pending' AND endpoint IN ({marks})",
                endpoints,
            ).fetchone()
        )
        return None if row is None or row[0] is None else float(row[0])

    async def webhook_deliveries(
        self,
        tenant: str | None,
        *,
        response_id: str | None = None,
        status: str | None = None,
        after: str | None = None,
        limit: int = 20,
    ) -> list[DeliveryRecord]:
        where, args = _delivery_filter(tenant, response_id, status, after)
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries{where} ORDER BY id DESC LIMIT ?",
                (*args, max(0, int(limit))),
            ).fetchall()
        )
        return [DeliveryRecord(*r) for r in rows]

    async def request_cancel(self, response_id: str) -> bool:
        return await self._write(_w_request_cancel, response_id)

    async def takeover(
        self, response_id: str, worker_id: str, lease_seconds: float, owner: str | None = None
    ) -> ResponseRecord | None:
        row = await self._write(_w_takeover, response_id, worker_id, lease_seconds, owner)
        return None if row is None else _record(row)

    async def release(self, response_id: str, worker_id: str) -> bool:
        return await self._write(_w_release, response_id, worker_id)

    async def leased(self, owner_prefix: str, limit: int) -> list[ResponseRecord]:
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_SLIM_COLUMNS} FROM responses WHERE lease_owner IS NOT NULL AND status = 'in_progress'"
                " AND substr(lease_owner, 1, ?) = ? LIMIT ?",
                (len(owner_prefix), owner_prefix, limit),
            ).fetchall()
        )
        return [_record(r) for r in rows]

    async def expired(self, limit: int) -> list[ResponseRecord]:
        now = time.time()
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM responses WHERE lease_owner IS NOT NULL AND status = 'in_progress'"
                " AND lease_expires < ? LIMIT ?",
                (now, limit),
            ).fetchall()
        )
        return [_record(r) for r in rows]

    async def events_after(self, response_id: str, after: int, limit: int = 1000) -> list[StoredEvent]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT seq, type, data FROM events WHERE response_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (response_id, after, limit),
            ).fetchall()
        )
        return [StoredEvent(r[0], r[1], r[2]) for r in rows]

    async def wait_for_events(self, response_id: str, after: int, timeout: float) -> None:
        # Another process may be writing this response: watch its last sequence number (a
        # cheap indexed read every 50 ms) rather than waking every caller on every tick.
        deadline = time.monotonic() + timeout
        while True:
            row = await self._read(
                lambda c: c.execute(
                    f"SELECT {_LAST_SEQ}, status FROM responses WHERE id = ?", (response_id,)
                ).fetchone()
            )
            if row is None or row[0] > after or row[1] in TERMINAL_VALUES:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    async def secret(self, name: str, value: bytes) -> bytes:
        return await self._write(_w_secret, name, value)

    async def count_queued(self, tenant: str | None = None) -> int:
        sql = "SELECT count(*) FROM responses WHERE status = 'queued'"
        args: tuple[str, ...] = ()
        if tenant is not None:
            sql, args = sql + " AND tenant = ?", (tenant,)
        row = await self._read(lambda c: c.execute(sql, args).fetchone())
        return int(row[0])

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
        sql, args = listing_query(tenant, status, model, after, order, limit, _SLIM_COLUMNS, "?")
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [_record(r) for r in rows]

    async def status_counts(self, tenant: str | None = None) -> dict[str, int]:
        sql, args = status_counts_query(tenant, "?")
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        counts = dict.fromkeys((s.value for s in Status), 0)
        counts.update({r[0]: int(r[1]) for r in rows})
        return counts

    async def lease_owners(self) -> list[tuple[str, int, float]]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT lease_owner, count(*), max(lease_expires) FROM responses"
                " WHERE lease_owner IS NOT NULL AND status = 'in_progress' GROUP BY lease_owner ORDER BY lease_owner"
            ).fetchall()
        )
        return [(r[0], int(r[1]), float(r[2] or 0.0)) for r in rows]

    async def sweep(self, responses_before: float, events_before: float, limit: int) -> tuple[int, int]:
        return await self._write(_w_sweep, responses_before, events_before, limit)

    # -- conversations --------------------------------------------------------------------

    async def conversation_create(self, conv: ConversationRecord, items: list[dict[str, Any]]) -> None:
        await self._write(
            _w_conversation_create, conv.id, conv.tenant, conv.created_at, orjson.dumps(conv.metadata), items
        )

    async def conversation_get(self, conversation_id: str) -> ConversationRecord | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT id, tenant, created_at, metadata FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        )
        return None if row is None else ConversationRecord(row[0], row[1], row[2], orjson.loads(row[3]))

    async def conversation_update(self, conversation_id: str, metadata: dict[str, str]) -> ConversationRecord | None:
        row = await self._write(_w_conversation_update, conversation_id, orjson.dumps(metadata))
        return None if row is None else ConversationRecord(row[0], row[1], row[2], dict(metadata))

    async def conversation_delete(self, conversation_id: str) -> bool:
        return await self._write(_w_conversation_delete, conversation_id)

    async def conversation_add(self, conversation_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        return await self._write(_w_conversation_append, conversation_id, None, items)

    async def conversation_items(
        self, conversation_id: str, after: str | None, limit: int, order: str
    ) -> tuple[list[dict[str, Any]], bool] | None:
        def run(c: sqlite3.Connection) -> tuple[list[dict[str, Any]], bool] | None:
            if c.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is None:
                return None
            start = -1 if order == "asc" else 1 << 62
            if after is not None:
                row = c.execute(
                    "SELECT pos FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
                    (conversation_id, after),
                ).fetchone()
                if row is None:
                    return None
                start = row[0]
            cmp, direction = (">", "ASC") if order == "asc" else ("<", "DESC")
            rows = c.execute(
                f"SELECT data FROM conversation_items WHERE conversation_id = ? AND pos {cmp} ?"
                f" ORDER BY pos {direction} LIMIT ?",
                (conversation_id, start, limit + 1),
            ).fetchall()
            return [orjson.loads(r[0]) for r in rows[:limit]], len(rows) > limit

        return await self._read(run)

    async def conversation_item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT data FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
                (conversation_id, item_id),
            ).fetchone()
        )
        return None if row is None else dict(orjson.loads(row[0]))

    async def conversation_item_delete(self, conversation_id: str, item_id: str) -> bool:
        return await self._write(_w_conversation_item_delete, conversation_id, item_id)

    async def conversation_begin(
        self, conversation_id: str, tenant: str, response_id: str, hold_until: float
    ) -> list[dict[str, Any]] | None:
        got = await self._write(_w_conversation_begin, conversation_id, tenant, response_id, hold_until)
        if isinstance(got, ConversationLocked):  # returned, not raised: a raise rolls back the batch
            raise got
        return None if got is None else [orjson.loads(r) for r in got]

    async def conversation_end(self, conversation_id: str, response_id: str, items: list[dict[str, Any]]) -> None:
        await self._write(_w_conversation_append, conversation_id, response_id, items)

    async def conversation_sweep(self, before: float, limit: int) -> int:
        return await self._write(_w_conversation_sweep, before, limit)


# -- the writes ------------------------------------------------------------------------------
# Each runs in the writer process (`sqlite_writer`) as `op(connection, *args)` inside a batch's
# transaction: module-level functions and plain arguments, so a call pickles as data. Rows come
# back raw; the store decodes them in the server.


def _w_insert(c: sqlite3.Connection, row: tuple[Any, ...], events: list[tuple[str, int, str, bytes]]) -> None:
    """A plain create: its row and first events (a round's are inserted together, see
    `run_round`)."""
    c.execute(_INSERT_RESPONSE, row)
    if events:
        c.executemany(_INSERT_EVENT, events)


def _w_create_checked(
    c: sqlite3.Connection,
    row: tuple[Any, ...],
    events: list[tuple[str, int, str, bytes]],
    tenant: str,
    idempotency_key: str | None,
    max_queued: int,
    max_queued_tenant: int,
) -> tuple[Any, ...] | QueueFull | None:
    """A create with an idempotency key or queue limits: the stored row of an earlier create
    with its key, or the refusal, or None once inserted."""
    if idempotency_key is not None:
        found: tuple[Any, ...] | None = c.execute(
            f"SELECT {_COLUMNS} FROM responses WHERE tenant = ? AND idempotency_key = ?", (tenant, idempotency_key)
        ).fetchone()
        if found is not None:
            return found
    if max_queued or max_queued_tenant:  # one writer: counted and inserted atomically
        total = c.execute("SELECT count(*) FROM responses WHERE status = 'queued'").fetchone()[0]
        mine = None
        if max_queued_tenant:
            mine = c.execute(
                "SELECT count(*) FROM responses WHERE tenant = ? AND status = 'queued'", (tenant,)
            ).fetchone()[0]
        refused = queue_full(total, mine, max_queued, max_queued_tenant)
        if refused is not None:
            return refused  # returned, not raised: a raise rolls back the batch
    _w_insert(c, row, events)
    return None


def _w_delete(c: sqlite3.Connection, response_id: str) -> bool:
    n = c.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount
    c.execute("DELETE FROM events WHERE response_id = ?", (response_id,))
    return n > 0


def _w_claim(c: sqlite3.Connection, worker_id: str, limit: int, lease_seconds: float) -> list[tuple[Any, ...]]:
    return c.execute(
        "UPDATE responses SET status = 'in_progress', lease_owner = ?, lease_expires = ?,"
        " attempts = attempts + 1, updated_at = ?"
        " WHERE id IN (SELECT id FROM responses WHERE status = 'queued' ORDER BY id LIMIT ?)"
        f" RETURNING {_COLUMNS}",
        (worker_id, time.time() + lease_seconds, time.time(), limit),
    ).fetchall()


def _w_heartbeat(c: sqlite3.Connection, worker_id: str, lease_seconds: float, ids: bytes) -> list[str]:
    rows = c.execute(
        "UPDATE responses SET lease_expires = ? WHERE lease_owner = ? AND status = 'in_progress'"
        " AND id IN (SELECT value FROM json_each(?)) RETURNING id, cancel_requested",
        (time.time() + lease_seconds, worker_id, ids),
    ).fetchall()
    return sorted(r[0] for r in rows if r[1])


#: a `Store.write` as the writer process takes it: response id, finish, force, conversation,
#: body (JSON), event rows, resume (JSON)
_Prepared = tuple[
    str, str | None, bool, ConversationAppend | None, bytes | None, list[tuple[str, int, str, bytes]], bytes | None
]


def _w_write(
    c: sqlite3.Connection, worker_id: str, prepared: list[_Prepared], fanout: Fanout
) -> tuple[list[WriteResult], bool]:
    """`Store.write`: the results, and whether webhook deliveries were queued. A few statements
    for the whole batch, not a few per response."""
    ids = list({w[0] for w in prepared})
    rows_now = c.execute(
        f"SELECT id, lease_owner, status, cancel_requested, {_LAST_SEQ}, tenant FROM responses"
        f" WHERE id IN ({','.join('?' * len(ids))})",
        ids,
    ).fetchall()
    state = {r[0]: (r[1], r[2], r[3], r[4]) for r in rows_now}
    out: list[WriteResult] = []
    appends: list[tuple[str, ConversationAppend]] = []
    events: list[tuple[str, int, str, bytes]] = []
    progress: list[tuple[bytes | None, int, bytes | None, str]] = []
    finishes: list[tuple[str, bytes | None, int, float, str]] = []
    now = time.time()
    for response_id, finish, force, conversation, body, rows, resume in prepared:
        st = state.get(response_id)
        if st is None or st[0] != worker_id or st[1] != "in_progress":
            out.append(WriteResult.FENCED)
            continue
        if finish is not None and st[2] and not force and finish != Status.CANCELLED:
            out.append(WriteResult.CANCEL_REQUESTED)
            continue
        if rows and (rows[0][1] != st[3] + 1 or any(b[1] != a[1] + 1 for a, b in zip(rows, rows[1:], strict=False))):
            # positions taken, or a gap: refuse this write only (logs stay 0..n)
            out.append(WriteResult.FENCED)
            continue
        events.extend(rows)
        last = rows[-1][1] if rows else None
        new_last = st[3] if last is None else last
        if finish is not None:
            finishes.append((finish, body, new_last, now, response_id))
            state[response_id] = (None, finish, st[2], new_last)
            if conversation is not None:
                appends.append((response_id, conversation))
        else:
            if body is not None or resume is not None:  # events alone leave the row be
                progress.append((body, new_last, resume, response_id))
            state[response_id] = (st[0], st[1], st[2], new_last)
        out.append(WriteResult.OK)
    if events:
        c.executemany(_INSERT_EVENT, events)
    if progress:
        c.executemany(
            "UPDATE responses SET body = COALESCE(?, body), last_seq = ?, resume = COALESCE(?, resume) WHERE id = ?",
            progress,
        )
    if finishes:
        c.executemany(
            "UPDATE responses SET status = ?, body = COALESCE(?, body), last_seq = ?,"
            " lease_owner = NULL, lease_expires = NULL, resume = NULL, updated_at = ? WHERE id = ?",
            finishes,
        )
    for rid, conv in appends:  # the turn's items, with its terminal write
        _w_conversation_append(c, conv.conversation_id, rid, conv.items, now)
    queued = False
    if finishes and fanout.targets:  # the webhook outbox, in the same transaction
        tenants = {r[0]: r[5] for r in rows_now}
        outbox = [d for f in finishes for d in fanout.rows(f[4], tenants[f[4]], f[0], now)]
        if outbox:
            c.executemany(_INSERT_DELIVERY, outbox)
            queued = True
    return out, queued


def _w_cancel_queued(
    c: sqlite3.Connection,
    response_id: str,
    body: bytes,
    rows: list[tuple[str, int, str, bytes]],
    first: int,
    fanout: Fanout,
) -> bool:
    now = time.time()
    row = c.execute(
        "UPDATE responses SET status = 'cancelled', body = ?, last_seq = ?, updated_at = ?"
        " WHERE id = ? AND status = 'queued' AND last_seq = ? RETURNING tenant",
        (body, rows[-1][1] if rows else -1, now, response_id, first - 1),
    ).fetchone()
    if row is None:
        return False
    c.executemany(_INSERT_EVENT, rows)
    outbox = fanout.rows(response_id, row[0], Status.CANCELLED.value, now)
    if outbox:
        c.executemany(_INSERT_DELIVERY, outbox)
    return True


def _w_webhook_claim(
    c: sqlite3.Connection, endpoint: str, owner: str, limit: int, lease_seconds: float
) -> list[tuple[Any, ...]]:
    now = time.time()
    return c.execute(
        "UPDATE webhook_deliveries SET claimed_by = ?, claimed_until = ?"
        " WHERE id IN (SELECT id FROM webhook_deliveries WHERE endpoint = ? AND status = 'pending'"
        " AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)"
        " ORDER BY next_attempt_at LIMIT ?)"
        f" RETURNING {DELIVERY_COLUMNS}",
        (owner, now + lease_seconds, endpoint, now, now, limit),
    ).fetchall()


def _w_webhook_result(
    c: sqlite3.Connection,
    delivery_id: str,
    owner: str,
    status: str,
    status_code: int | None,
    error: str | None,
    next_attempt_at: float | None,
) -> bool:
    now = time.time()
    n = c.execute(
        "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, last_status_code = ?,"
        " last_error = ?, next_attempt_at = ?, delivered_at = ?, claimed_by = NULL, claimed_until = NULL"
        " WHERE id = ? AND claimed_by = ? AND status = 'pending'",
        (status, status_code, error, next_attempt_at, now if status == "delivered" else None, delivery_id, owner),
    ).rowcount
    return n > 0


def _w_request_cancel(c: sqlite3.Connection, response_id: str) -> bool:
    n = c.execute(
        "UPDATE responses SET cancel_requested = 1 WHERE id = ? AND status = 'in_progress'", (response_id,)
    ).rowcount
    return n > 0


def _w_takeover(
    c: sqlite3.Connection, response_id: str, worker_id: str, lease_seconds: float, owner: str | None
) -> tuple[Any, ...] | None:
    now = time.time()
    if owner is None:
        cond, arg = "(lease_expires IS NULL OR lease_expires < ?)", now
    else:
        cond, arg = "lease_owner = ?", owner  # type: ignore[assignment]
    row: tuple[Any, ...] | None = c.execute(
        "UPDATE responses SET lease_owner = ?, lease_expires = ?, updated_at = ?"
        f" WHERE id = ? AND status = 'in_progress' AND {cond}"
        f" RETURNING {_COLUMNS}",
        (worker_id, now + lease_seconds, now, response_id, arg),
    ).fetchone()
    return row


def _w_release(c: sqlite3.Connection, response_id: str, worker_id: str) -> bool:
    n = c.execute(
        f"UPDATE responses SET status = 'queued', last_seq = {_LAST_SEQ}, lease_owner = NULL,"
        " lease_expires = NULL, updated_at = ? WHERE id = ? AND lease_owner = ? AND status = 'in_progress'",
        (time.time(), response_id, worker_id),
    ).rowcount
    return n > 0


def _w_secret(c: sqlite3.Connection, name: str, value: bytes) -> bytes:
    c.execute("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)", (name, value))
    return bytes(c.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0])


def _w_sweep(c: sqlite3.Connection, responses_before: float, events_before: float, limit: int) -> tuple[int, int]:
    terminal = tuple(TERMINAL_VALUES)
    marks = ",".join("?" * len(terminal))

    def ended_before(before: float, also: str = "") -> list[str]:
        sql = f"SELECT id FROM responses WHERE updated_at < ? AND status IN ({marks}){also} LIMIT ?"
        return [r[0] for r in c.execute(sql, (before, *terminal, limit)).fetchall()]

    ids = ended_before(responses_before)
    for i in ids:
        c.execute("DELETE FROM events WHERE response_id = ?", (i,))
        c.execute("DELETE FROM responses WHERE id = ?", (i,))
    logs = ended_before(events_before, " AND events_purged = 0")
    for i in logs:
        c.execute("DELETE FROM events WHERE response_id = ?", (i,))
        c.execute("UPDATE responses SET events_purged = 1 WHERE id = ?", (i,))
    # finished webhook deliveries go with the responses' retention (pending ones stay until
    # they are delivered or given up)
    c.execute(
        "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries"
        " WHERE status != 'pending' AND created_at < ? LIMIT ?)",
        (responses_before, limit),
    )
    return len(ids), len(logs)


def _w_conversation_create(
    c: sqlite3.Connection,
    conversation_id: str,
    tenant: str,
    created_at: float,
    meta: bytes,
    items: list[dict[str, Any]],
) -> None:
    c.execute(
        "INSERT INTO conversations (id, tenant, created_at, updated_at, metadata) VALUES (?, ?, ?, ?, ?)",
        (conversation_id, tenant, created_at, time.time(), meta),
    )
    _w_conversation_append(c, conversation_id, None, items, time.time())


def _w_conversation_update(c: sqlite3.Connection, conversation_id: str, meta: bytes) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = c.execute(
        "UPDATE conversations SET metadata = ?, updated_at = ? WHERE id = ? RETURNING id, tenant, created_at",
        (meta, time.time(), conversation_id),
    ).fetchone()
    return row


def _w_conversation_delete(c: sqlite3.Connection, conversation_id: str) -> bool:
    n = c.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount
    c.execute("DELETE FROM conversation_items WHERE conversation_id = ?", (conversation_id,))
    return n > 0


def _w_conversation_item_delete(c: sqlite3.Connection, conversation_id: str, item_id: str) -> bool:
    n = c.execute(
        "DELETE FROM conversation_items WHERE conversation_id = ? AND item_id = ?", (conversation_id, item_id)
    ).rowcount
    if n:
        c.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conversation_id))
    return n > 0


def _w_conversation_begin(
    c: sqlite3.Connection, conversation_id: str, tenant: str, response_id: str, hold_until: float
) -> list[bytes] | None | ConversationLocked:
    """Take the conversation's turn: its items (raw), None if it is not the tenant's, or who holds it."""
    row = c.execute(
        "SELECT tenant, active_response, active_until FROM conversations WHERE id = ?", (conversation_id,)
    ).fetchone()
    if row is None or row[0] != tenant:
        return None
    now = time.time()
    if row[1] is not None and row[1] != response_id:
        st = c.execute("SELECT status FROM responses WHERE id = ?", (row[1],)).fetchone()
        if (st is not None and st[0] not in TERMINAL_VALUES) or (st is None and (row[2] or 0) > now):
            return ConversationLocked(row[1])
    c.execute(
        "UPDATE conversations SET active_response = ?, active_until = ?, updated_at = ? WHERE id = ?",
        (response_id, hold_until, now, conversation_id),
    )
    rows = c.execute(
        "SELECT data FROM conversation_items WHERE conversation_id = ? ORDER BY pos", (conversation_id,)
    ).fetchall()
    return [r[0] for r in rows]


def _w_conversation_sweep(c: sqlite3.Connection, before: float, limit: int) -> int:
    ids = [r[0] for r in c.execute("SELECT id FROM conversations WHERE updated_at < ? LIMIT ?", (before, limit))]
    for i in ids:
        c.execute("DELETE FROM conversation_items WHERE conversation_id = ?", (i,))
        c.execute("DELETE FROM conversations WHERE id = ?", (i,))
    return len(ids)


def _w_conversation_append(
    c: sqlite3.Connection,
    conversation_id: str,
    response_id: str | None,
    items: list[dict[str, Any]],
    now: float | None = None,
) -> list[dict[str, Any]] | None:
    """Append `items` to a conversation (ids made unique in it) and, for `response_id`, end
    its turn; None if the conversation does not exist."""
    row = c.execute("SELECT next_pos FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    if row is None:
        return None
    taken: set[str] = set()
    ids = [str(it.get("id")) for it in items if it.get("id")]
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        taken.update(
            r[0]
            for r in c.execute(
                "SELECT item_id FROM conversation_items WHERE conversation_id = ?"
                f" AND item_id IN ({','.join('?' * len(chunk))})",
                (conversation_id, *chunk),
            ).fetchall()
        )
    items = unique_ids(items, taken)
    pos = row[0]
    now = time.time() if now is None else now
    c.executemany(
        "INSERT INTO conversation_items (conversation_id, pos, item_id, data) VALUES (?, ?, ?, ?)",
        [(conversation_id, pos + i, it["id"], orjson.dumps(it)) for i, it in enumerate(items)],
    )
    c.execute(
        "UPDATE conversations SET next_pos = ?, updated_at = ?,"
        " active_until = CASE WHEN active_response = ? THEN NULL ELSE active_until END,"
        " active_response = CASE WHEN active_response = ? THEN NULL ELSE active_response END WHERE id = ?",
        (pos + len(items), now, response_id, response_id, conversation_id),
    )
    return items


_INSERT_RESPONSE = (
    "INSERT INTO responses (id, tenant, status, background, body, input_items, request, created_at,"
    " updated_at, last_seq, lease_owner, lease_expires, attempts, idempotency_key, model)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERY = f"INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) VALUES ({', '.join('?' * 13)})"


def _delivery_filter(
    tenant: str | None, response_id: str | None, status: str | None, after: str | None
) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for cond, value in (
        ("tenant = ?", tenant),
        ("response_id = ?", response_id),
        ("status = ?", status),
        ("id < ?", after),
    ):
        if value is not None:
            where.append(cond)
            args.append(value)
    return (" WHERE " + " AND ".join(where) if where else ""), args


_INSERT_EVENT = "INSERT INTO events (response_id, seq, type, data) VALUES (?, ?, ?, ?)"


_Point = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
#: a write as the writer process takes it: `op(connection, *args)`
Job = tuple[Callable[..., Any], tuple[Any, ...]]


def run_round(conn: sqlite3.Connection, jobs: list[Job]) -> list[tuple[bool, Any]]:
    """Run what the writer process took in one go, `(ok, result or exception)` each in order:
    the plain creates in one transaction (nothing else in a round can depend on them), the rest
    in another."""
    creates = [i for i, job in enumerate(jobs) if job[0] is _w_insert]
    if not creates or len(creates) == len(jobs):
        return _run_batch(conn, jobs)
    rest = [i for i, job in enumerate(jobs) if job[0] is not _w_insert]
    out: list[tuple[bool, Any]] = [(False, None)] * len(jobs)
    for part in (creates, rest):
        for i, result in zip(part, _run_batch(conn, [jobs[i] for i in part]), strict=True):
            out[i] = result
    return out


def _run_batch(conn: sqlite3.Connection, jobs: list[Job]) -> list[tuple[bool, Any]]:
    """Run a batch of writes in one transaction. If one of them fails, run them again each in
    its own transaction, so one bad write never undoes the others (the fast path has no
    savepoints: they cost more than the writes)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        together = len(jobs) > 1 and all(op is _w_insert for op, _ in jobs)
        if together:  # a round of plain creates: two statements for the lot
            conn.executemany(_INSERT_RESPONSE, [args[0] for _, args in jobs])
            conn.executemany(_INSERT_EVENT, [e for _, args in jobs for e in args[1]])
            results: list[tuple[bool, Any]] = [(True, None)] * len(jobs)
        else:
            results = [(True, op(conn, *args)) for op, args in jobs]
        conn.execute("COMMIT")
        return results
    except Exception as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if len(jobs) == 1:
            return [(False, exc)]
    results = []
    for job in jobs:
        results.extend(_run_batch(conn, [job]))
    return results


def _take(q: queue.SimpleQueue[_Point | None]) -> tuple[list[_Point], bool]:
    """What the point reader runs next: waits for one read, then takes what else is queued
    (up to `_MAX_BATCH`). `(reads, stop)`: stop once these are done (`None` was queued)."""
    first = q.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < _MAX_BATCH:
        try:
            nxt = q.get_nowait()
        except queue.Empty:
            break
        if nxt is None:
            return batch, True
        batch.append(nxt)
    return batch, False
