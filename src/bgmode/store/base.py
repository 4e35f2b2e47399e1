"""The storage contract: responses (the job queue) and their append-only event logs.

Every backend (SQLite by default, PostgreSQL for many processes) implements `Store`.
The guarantees the rest of bgmode relies on:

- **Atomic create.** A response row and its first events are committed together, before
  the client hears back.
- **One writer per response.** A worker claims a response with a lease; every write it
  makes (`write`) is fenced: applied only while it still owns the lease and the response
  is `in_progress`. A worker that lost its lease gets `FENCED` and must stop.
- **Cancel is settled in the store.** A queued response is cancelled at once
  (`cancel_queued`). For a running one `request_cancel` sets a flag; the owning worker sees
  it (in-process signal or `heartbeat`) and finishes `cancelled`. A finishing write that
  finds the flag set is refused with `CANCEL_REQUESTED`, so `cancelled` always wins over a
  late completion once the cancel committed first, and a terminal status is never changed.
- **Gap-free logs.** `(response_id, sequence_number)` is unique; events are appended in
  order by the single writer, so a log is always 0..n without gaps or duplicates.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

from bgmode.errors import RateLimited
from bgmode.records import ResponseRecord, Status, StoredEvent


class WriteResult(enum.Enum):
    OK = "ok"
    #: the writer no longer owns the response (lease lost, or the response was finished/deleted)
    FENCED = "fenced"
    #: a finishing write refused because a cancel was requested first
    CANCEL_REQUESTED = "cancel_requested"


@dataclass(slots=True)
class Write:
    """Events (and optionally a new Response snapshot and terminal status) for one response."""

    response_id: str
    events: list[StoredEvent]
    #: the Response object to store (None: keep the stored one)
    body: dict[str, Any] | None = None
    #: a terminal status: this write finishes the response and releases the lease
    finish: str | None = None
    #: for a finishing write: finish even if a cancel was requested (the cancelled finish itself)
    force: bool = False
    #: for a finishing write of a response run in a conversation: the items to append to it
    #: (and the turn to end), applied in the same transaction, only if the write is accepted
    conversation: ConversationAppend | None = None
    #: the backend checkpoint covering these events (`ResponseRecord.resume`; None: keep the
    #: stored one; a finishing write clears it)
    resume: dict[str, Any] | None = None


@dataclass(slots=True)
class ConversationAppend:
    """A turn's end: `items` appended to the conversation, its turn lock released."""

    conversation_id: str
    items: list[dict[str, Any]]


@dataclass(slots=True)
class ConversationRecord:
    """A stored conversation (its items live apart, in order)."""

    id: str
    tenant: str
    created_at: float
    metadata: dict[str, str]


def unique_ids(items: list[dict[str, Any]], taken: set[str]) -> list[dict[str, Any]]:
    """`items` with every id already in `taken` (or repeated among them) replaced by a new one;
    `taken` gains their ids."""
    from bgmode.ids import new_id

    out = []
    for it in items:
        iid = it.get("id")
        if not isinstance(iid, str) or not iid or iid in taken:
            prefix = iid.split("_", 1)[0] if isinstance(iid, str) and "_" in iid else "item"
            it = {**it, "id": new_id(prefix)}
        taken.add(it["id"])
        out.append(it)
    return out


def listing_query(
    tenant: str,
    status: str | None,
    model: str | None,
    after: str | None,
    order: str,
    limit: int,
    columns: str,
    mark: str,
) -> tuple[str, list[Any]]:
    """The SQL of `Store.list_responses` (shared by the stores): `mark` "?" (SQLite) or "$"
    (PostgreSQL, numbered).

    Two partial indexes serve every listing, each walked from the cursor: queued responses
    by `responses_queue (id) WHERE status = 'queued'` (the claim order too), the others by
    `responses_listed (tenant, status, id) WHERE status <> 'queued'`. So a create, which is
    stored queued, pays for one index, not one per filter. With a status, one walk; without,
    one walk per status, each cut at `limit`, merged (a sort of at most 6 x `limit` rows,
    never of the table). Status values are written into the SQL as literals (they are this
    enum's, checked here), and each walk repeats its index's condition, so the planners can
    prove the partial index applies. A `model` filter is checked on the rows walked; so is the
    tenant of queued rows."""
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    args: list[Any] = []

    def p(value: Any) -> str:
        args.append(value)
        return "?" if mark == "?" else f"${len(args)}"

    def walk(st: str) -> str:
        if st not in _STATUS_VALUES:
            raise ValueError(f"not a status: {st!r}")
        where = [f"tenant = {p(tenant)}", f"status = '{st}'"]
        if st != "queued":
            where.append("status <> 'queued'")
        if model is not None:
            where.append(f"model = {p(model)}")
        if after is not None:
            where.append(f"id {'<' if order == 'desc' else '>'} {p(after)}")
        return (
            f"SELECT {columns} FROM responses WHERE {' AND '.join(where)}"
            f" ORDER BY id {order.upper()} LIMIT {p(max(0, int(limit)))}"
        )

    if status is not None:
        return walk(status), args
    walks = " UNION ALL ".join(f"SELECT * FROM ({walk(st.value)}) AS w{i}" for i, st in enumerate(Status))
    return f"{walks} ORDER BY id {order.upper()} LIMIT {p(max(0, int(limit)))}", args


_STATUS_VALUES = frozenset(s.value for s in Status)


def last_seq_sql(table: str = "responses") -> str:
    """A response's last event position, as a column expression over `table` (its name or
    alias), the same SQL for both stores.

    A write that only adds events to a running response does not rewrite its row (a row
    carries the Response snapshot: rewriting it for every few tokens was most of what a
    flush wrote), so a running response's `last_seq` column can lag: its event log, read at
    its last entry by the primary key, is the truth. Every write that changes the row's
    status (finish, release) or snapshot stores the exact position."""
    return (
        f"CASE WHEN {table}.status = 'in_progress' THEN COALESCE((SELECT max(e.seq) FROM events e"
        f" WHERE e.response_id = {table}.id), {table}.last_seq) ELSE {table}.last_seq END"
    )


#: the indexes `listing_query` and `status_counts_query` walk, the same SQL for both stores
#: (run after their migrations: older databases lack the columns); the indexes earlier
#: versions made are dropped. A create, stored queued, pays for one of them.
LISTING_INDEXES = """
CREATE INDEX IF NOT EXISTS responses_queue ON responses (id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS responses_listed ON responses (tenant, status, id) WHERE status <> 'queued';
DROP INDEX IF EXISTS responses_queued;
DROP INDEX IF EXISTS responses_tenant;
DROP INDEX IF EXISTS responses_tenant_status;
DROP INDEX IF EXISTS responses_tenant_model;
"""


def status_counts_query(tenant: str | None, mark: str) -> tuple[str, list[Any]]:
    """The SQL of `Store.status_counts`: one walk of each listing index (see `listing_query`)."""
    if tenant is None:
        return (
            "SELECT status, count(*) FROM responses WHERE status <> 'queued' GROUP BY status"
            " UNION ALL SELECT 'queued', count(*) FROM responses WHERE status = 'queued'",
            [],
        )
    t1, t2 = ("?", "?") if mark == "?" else ("$1", "$1")
    return (
        f"SELECT status, count(*) FROM responses WHERE tenant = {t1} AND status <> 'queued' GROUP BY status"
        f" UNION ALL SELECT 'queued', count(*) FROM responses WHERE status = 'queued' AND tenant = {t2}",
        [tenant, tenant] if mark == "?" else [tenant],
    )


#: a response's terminal status → the webhook event type OpenAI sends for it
WEBHOOK_EVENTS = {
    "completed": "response.completed",
    "failed": "response.failed",
    "cancelled": "response.cancelled",
    "incomplete": "response.incomplete",
}


class WebhookTarget(Protocol):
    """What the store needs of a webhook endpoint to fan an event out to it."""

    @property
    def name(self) -> str: ...
    @property
    def events(self) -> frozenset[str]: ...
    @property
    def tenants(self) -> frozenset[str]: ...


@dataclass(slots=True)
class DeliveryRecord:
    """One webhook event for one endpoint (a row of the outbox)."""

    id: str
    event_id: str
    endpoint: str
    tenant: str
    response_id: str
    type: str
    #: pending | delivered | failed (retries given up)
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: float | None
    delivered_at: float | None
    #: when the response ended (the event's `created_at`)
    created_at: float

    def public(self) -> dict[str, Any]:
        """As `GET /v1/webhooks/deliveries` shows it (times in whole epoch seconds)."""

        def sec(t: float | None) -> int | None:
            return None if t is None else int(t)

        return {
            "id": self.id,
            "object": "webhook.delivery",
            "event_id": self.event_id,
            "endpoint": self.endpoint,
            "response_id": self.response_id,
            "type": self.type,
            "status": self.status,
            "attempts": self.attempts,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "next_attempt_at": sec(self.next_attempt_at) if self.status == "pending" else None,
            "delivered_at": sec(self.delivered_at),
            "created_at": sec(self.created_at),
        }


#: the outbox columns, in `DeliveryRecord` order
DELIVERY_COLUMNS = (
    "id, event_id, endpoint, tenant, response_id, type, status, attempts, last_status_code, last_error,"
    " next_attempt_at, delivered_at, created_at"
)


class Fanout:
    """The configured webhook endpoints, as the store's terminal writes fan events out to them."""

    def __init__(self, targets: list[tuple[str, frozenset[str], frozenset[str]]] | None = None) -> None:
        self.targets = targets or []

    def rows(self, response_id: str, tenant: str, status: str, now: float) -> list[tuple[Any, ...]]:
        """Outbox rows (DELIVERY_COLUMNS order) for a response that just ended with `status`:
        one event id, one row per endpoint that takes this event type and tenant."""
        kind = WEBHOOK_EVENTS.get(status)
        if kind is None or not self.targets:
            return []
        from bgmode.ids import new_id

        event_id: str | None = None
        out = []
        for name, events, tenants in self.targets:
            if (events and kind not in events) or (tenants and tenant not in tenants):
                continue
            event_id = event_id or new_id("evt")
            out.append(
                (new_id("whdel"), event_id, name, tenant, response_id, kind, "pending", 0, None, None, now, None, now)
            )
        return out


class QueueFull(RateLimited):
    """A create refused by `Store.create(max_queued=..., max_queued_tenant=...)`: the queue (or
    the tenant's share of it) was full when the create's transaction looked. An API error
    already (429 `rate_limit_exceeded`, `Retry-After: 1`), so the service can let it through."""

    def __init__(self, limit: int, per_tenant: bool) -> None:
        who = "for this API key" if per_tenant else "on this server"
        super().__init__(
            f"Too many queued responses {who} (limit {limit}); retry later.",
            code="rate_limit_exceeded",
            headers={"Retry-After": "1"},
        )
        self.limit = limit
        self.per_tenant = per_tenant

    def __reduce__(self) -> tuple[type[QueueFull], tuple[int, bool]]:  # it crosses the writer process's pipe
        return QueueFull, (self.limit, self.per_tenant)


def queue_full(total: int, mine: int | None, max_queued: int, max_queued_tenant: int) -> QueueFull | None:
    """The refusal for a create that finds `total` queued responses (`mine` of its tenant's)."""
    if max_queued and total >= max_queued:
        return QueueFull(max_queued, False)
    if max_queued_tenant and mine is not None and mine >= max_queued_tenant:
        return QueueFull(max_queued_tenant, True)
    return None


class ConversationLocked(Exception):
    """Another response is running on this conversation (`Store.conversation_begin`)."""


class Store(ABC):
    """Durable state for responses and their ordered event logs."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema (idempotent)."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release connections."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the store is unreachable (readiness)."""

    @abstractmethod
    async def create(
        self,
        record: ResponseRecord,
        events: list[StoredEvent],
        idempotency_key: str | None = None,
        *,
        max_queued: int = 0,
        max_queued_tenant: int = 0,
    ) -> ResponseRecord:
        """Insert a response and its first events atomically.

        With an `idempotency_key` already used by the same tenant, insert nothing and return
        the stored response instead. With `max_queued` / `max_queued_tenant` (0: no limit),
        raise `QueueFull` and insert nothing when that many responses (of all tenants / of the
        record's tenant) are already queued; the count and the insert are one atomic step, so
        concurrent creates never overshoot a limit.
        """

    @abstractmethod
    async def get(self, response_id: str, full: bool = True) -> ResponseRecord | None:
        """The response, or None. `full=False` (a poll): `input_items` and `request` are left
        empty and `body` undecoded (`body` is {}, `body_json` holds the stored bytes)."""

    @abstractmethod
    async def delete(self, response_id: str) -> bool:
        """Delete a response and its events; False if there was none."""

    @abstractmethod
    async def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[ResponseRecord]:
        """Move up to `limit` queued responses, oldest first, to `in_progress` under a lease."""

    @abstractmethod
    async def heartbeat(self, worker_id: str, lease_seconds: float, response_ids: list[str]) -> list[str]:
        """Renew the leases `worker_id` holds on `response_ids` (the ones it runs); return those
        whose cancel was requested. A lease it holds without running the response (a claim or
        a create whose answer was lost after its commit) is left to expire and be reaped."""

    @abstractmethod
    async def write(self, worker_id: str, writes: list[Write]) -> list[WriteResult]:
        """Apply fenced writes in one transaction; one result per write, in order.

        A write whose sequence numbers do not continue the log exactly (already stored, not
        consecutive, or leaving a gap) is refused with `FENCED`, without affecting the others.
        """

    @abstractmethod
    async def cancel_queued(self, response_id: str, body: dict[str, Any], events: list[StoredEvent]) -> bool:
        """Cancel a response that is still queued; False if it is no longer queued."""

    @abstractmethod
    async def request_cancel(self, response_id: str) -> bool:
        """Flag a running response for cancellation; False if it is not `in_progress`."""

    @abstractmethod
    async def takeover(
        self, response_id: str, worker_id: str, lease_seconds: float, owner: str | None = None
    ) -> ResponseRecord | None:
        """Take the lease of an `in_progress` response whose lease has expired (its worker was
        lost); with `owner`, of one still leased to `owner`, a worker known to be gone."""

    @abstractmethod
    async def release(self, response_id: str, worker_id: str) -> bool:
        """Hand a running response back to the queue (`queued`, no lease), if `worker_id` owns it."""

    @abstractmethod
    async def leased(self, owner_prefix: str, limit: int) -> list[ResponseRecord]:
        """`in_progress` responses leased to an owner whose id starts with `owner_prefix`
        (expired or not), as `get(full=False)` returns them."""

    @abstractmethod
    async def expired(self, limit: int) -> list[ResponseRecord]:
        """`in_progress` responses whose lease has expired."""

    @abstractmethod
    async def events_after(self, response_id: str, after: int, limit: int = 1000) -> list[StoredEvent]:
        """Events with `sequence_number > after`, in order."""

    @abstractmethod
    async def count_queued(self, tenant: str | None = None) -> int:
        """How many responses are queued (for one tenant, or all)."""

    @abstractmethod
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
        """Up to `limit` of `tenant`'s responses ordered by id (`order` "desc": newest first, or
        "asc"), only those after the id `after` in that order (exclusive; the id need not
        exist), with exactly `status` / `model` when given. Records as `get(full=False)`
        returns them. Ask `limit + 1` to learn whether more follow."""

    @abstractmethod
    async def status_counts(self, tenant: str | None = None) -> dict[str, int]:
        """How many responses have each status (every `Status` value, zeros included), for
        one tenant or all."""

    @abstractmethod
    async def lease_owners(self) -> list[tuple[str, int, float]]:
        """Workers holding leases now: (owner id, how many `in_progress` responses it holds,
        its latest lease expiry in epoch seconds), by owner id."""

    # -- webhooks: an outbox filled by the terminal writes -----------------------------------
    #
    # With endpoints configured, every write that makes a background response terminal
    # (`write` with `finish`, `cancel_queued`) inserts one pending delivery per matching
    # endpoint in the same transaction: a crash after the commit loses no event. A dispatcher
    # claims due deliveries under a lease (never two senders at once) and records each
    # attempt's outcome.

    _fanout: Fanout = Fanout()

    def configure_webhooks(self, endpoints: list[WebhookTarget]) -> None:
        """The endpoints terminal writes fan out to from now on (none: no outbox rows)."""
        self._fanout = Fanout([(e.name, frozenset(e.events), frozenset(e.tenants)) for e in endpoints])

    @abstractmethod
    async def webhook_claim(self, endpoint: str, owner: str, limit: int, lease_seconds: float) -> list[DeliveryRecord]:
        """Up to `limit` pending deliveries for `endpoint` whose attempt is due and that no
        live claim holds, oldest due first, now claimed by `owner` for `lease_seconds`."""

    @abstractmethod
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
        """Record an attempt (attempts + 1) and release the claim: `status` "delivered",
        "failed" (given up) or "pending" (retry at `next_attempt_at`). Fenced: False (nothing
        changed) unless `owner` still holds the claim."""

    @abstractmethod
    async def webhook_next_due(self, endpoints: list[str]) -> float | None:
        """When the next pending delivery for one of `endpoints` is due (its attempt time, or
        the end of its claim), or None if there is none."""

    @abstractmethod
    async def webhook_deliveries(
        self,
        tenant: str | None,
        *,
        response_id: str | None = None,
        status: str | None = None,
        after: str | None = None,
        limit: int = 20,
    ) -> list[DeliveryRecord]:
        """Deliveries newest first (by id), of one tenant or all, after the id `after`
        (exclusive), filtered exactly. Ask `limit + 1` to learn whether more follow."""

    async def wait_for_webhooks(self, timeout: float) -> None:
        """Return when new deliveries may exist (a terminal write committed), or at `timeout`."""
        import asyncio

        await asyncio.sleep(timeout)

    @abstractmethod
    async def sweep(self, responses_before: float, events_before: float, limit: int) -> tuple[int, int]:
        """Delete finished responses older than `responses_before` (with their finished webhook
        deliveries), and the event logs of finished responses older than `events_before`
        (marking them purged); at most `limit` of each. Returns how many responses and logs
        were removed."""

    @abstractmethod
    async def secret(self, name: str, value: bytes) -> bytes:
        """The server secret `name`: stored as `value` if there is none yet (first writer wins,
        across processes), else the stored one. Keys every process must share live here."""

    # -- conversations ------------------------------------------------------------------------
    #
    # A conversation is a row plus its items in order (positions 0..n, ids unique within it).
    # A turn (a response run with `conversation`) takes the conversation's lock with
    # `conversation_begin` and ends it with a finishing `Write.conversation` (background) or
    # `conversation_end` (foreground). The lock is held while the locking response exists and
    # is not finished, or, while it does not exist yet (being created, or run in a request),
    # until `hold_until`.

    @abstractmethod
    async def conversation_create(self, conv: ConversationRecord, items: list[dict[str, Any]]) -> None:
        """Insert a conversation and its first items atomically."""

    @abstractmethod
    async def conversation_get(self, conversation_id: str) -> ConversationRecord | None:
        """The conversation, or None."""

    @abstractmethod
    async def conversation_update(self, conversation_id: str, metadata: dict[str, str]) -> ConversationRecord | None:
        """Replace its metadata; None if there is no such conversation."""

    @abstractmethod
    async def conversation_delete(self, conversation_id: str) -> bool:
        """Delete a conversation and its items; False if there was none."""

    @abstractmethod
    async def conversation_add(self, conversation_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Append items (an id already in the conversation is replaced by a new one); the items
        as stored, or None if there is no such conversation."""

    @abstractmethod
    async def conversation_items(
        self, conversation_id: str, after: str | None, limit: int, order: str
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of items (`order` "asc" or "desc", after the item `after`) and whether more
        follow; None if the conversation or the `after` item does not exist."""

    @abstractmethod
    async def conversation_item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        """One item, or None."""

    @abstractmethod
    async def conversation_item_delete(self, conversation_id: str, item_id: str) -> bool:
        """Delete one item; False if there was none."""

    @abstractmethod
    async def conversation_begin(
        self, conversation_id: str, tenant: str, response_id: str, hold_until: float
    ) -> list[dict[str, Any]] | None:
        """Start a turn: lock the conversation for `response_id` and return all its items (the
        context), in one transaction. None if the conversation does not exist for `tenant`;
        raises `ConversationLocked` while another turn holds it."""

    @abstractmethod
    async def conversation_end(self, conversation_id: str, response_id: str, items: list[dict[str, Any]]) -> None:
        """End a turn outside a finishing write: append `items` (if the conversation still
        exists) and release the lock if `response_id` holds it, in one transaction."""

    @abstractmethod
    async def conversation_sweep(self, before: float, limit: int) -> int:
        """Delete at most `limit` conversations (with their items) untouched since `before`."""

    async def wait_for_events(self, response_id: str, after: int, timeout: float) -> None:
        """Return when events after `after` may exist, or at `timeout`. Callers always re-read.

        The default polls; backends with notifications override it.
        """
        import asyncio

        await asyncio.sleep(min(timeout, 0.05))

    async def wait_for_work(self, timeout: float) -> None:
        """Return when queued work may exist (another process created it), or at `timeout`."""
        import asyncio

        await asyncio.sleep(timeout)
