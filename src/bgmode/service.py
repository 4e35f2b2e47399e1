"""The request-side use cases: create, retrieve, stream, cancel, delete, list input items.

No HTTP here (that is `app.py`) and no SQL (that is `store/`): this module decides what
each call means, in OpenAI's terms, and raises `APIError`s that `app.py` renders.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from bgmode import metrics
from bgmode.backends.base import BackendError, Finish, estimate_input_tokens
from bgmode.context import following, model_request, run_request
from bgmode.conversations import ConversationNotFound
from bgmode.errors import InvalidRequest, NotFound, ResponseNotFound
from bgmode.events import TERMINAL_EVENT_TYPES, ResponseBuilder, lifecycle_event
from bgmode.hub import Hub
from bgmode.ids import new_id
from bgmode.items import count_media
from bgmode.logs import state_change
from bgmode.protocol import CreateRequest, parse_create, response_object
from bgmode.records import TERMINAL_VALUES, ResponseRecord, Status, StoredEvent
from bgmode.routing import Route, Router
from bgmode.sealing import Sealer
from bgmode.sse import KEEPALIVE, frame
from bgmode.store.base import ConversationLocked, Store
from bgmode.tools import hosted_tools
from bgmode.worker import Worker, seal_for

log = logging.getLogger("bgmode.service")
#: a plain str (an enum member's `.value` is a property lookup, on the create path thrice)
_QUEUED = Status.QUEUED.value


@dataclass
class Limits:
    #: queued responses allowed in the whole server, and per tenant (0: no limit)
    max_queued: int = 0
    max_queued_per_tenant: int = 0
    keepalive_seconds: float = 15.0
    #: how long a cancel of a running response waits for its worker to settle it
    cancel_wait_seconds: float = 5.0
    lease_seconds: float = 30.0
    #: how long a turn lock of a conversation outlives a response that is not stored yet: a
    #: background one being created (its row then holds the lock), a foreground one running
    #: in its request (the lock is released when it ends; this bounds a server crash's)
    background_hold_seconds: float = 60.0
    foreground_hold_seconds: float = 600.0


@dataclass
class Created:
    record: ResponseRecord
    #: for stream=true: the SSE frames to send
    stream: AsyncIterator[bytes] | None = None
    #: the Response to answer with, serialised, when it is not the record's (a background
    #: create answers as it was created, "queued", even when it already runs)
    reply_json: bytes | None = None


class Service:
    def __init__(
        self, store: Store, hub: Hub, router: Router, limits: Limits | None = None, worker: Worker | None = None
    ) -> None:
        self.store = store
        self.hub = hub
        self.router = router
        self.limits = limits or Limits()
        #: this process's worker, if it runs one: it may take new responses directly
        self.worker = worker
        self.shutting_down = asyncio.Event()
        #: opens and seals reasoning `encrypted_content` (set by the server once the store is open)
        self.sealer: Sealer | None = None
        self._owner = f"api:{new_id('x')[2:14]}"

    # -- create -------------------------------------------------------------------------------

    async def create(self, body: Any, tenant: str, idempotency_key: str | None = None) -> Created:
        req = parse_create(body)
        route = self.router.resolve(req.model)
        if route is None:
            raise NotFound(
                f"The model `{req.model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        if req.tools or isinstance(req.tool_choice, dict) or not isinstance(req.raw.get("input"), str):
            self._check_route(req, route)
        if req.metadata:
            try:
                route.backend.check(req.metadata)
            except ValueError as exc:
                raise InvalidRequest(str(exc.args[-1]), param=str(exc.args[0]), code="invalid_value") from None
        history = await self._history(req, tenant) if req.previous_response_id else None
        response_id = new_id("resp")
        now = time.time()
        if req.conversation is not None:
            hold = self.limits.background_hold_seconds if req.background else self.limits.foreground_hold_seconds
            history = await self._begin_turn(req.conversation, tenant, response_id, now + hold)
        request = run_request(req, history)
        if not req.background:
            return await self._create_sync(req, response_id, int(now), tenant, request)

        queued = response_object(req, response_id, int(now), _QUEUED)
        body_json = orjson.dumps(queued)
        events = [lifecycle_event("response.created", body_json, 0), lifecycle_event("response.queued", body_json, 1)]
        record = ResponseRecord(
            id=response_id,
            tenant=tenant,
            status=_QUEUED,
            background=True,
            body=queued,
            input_items=req.input_items,
            request=request,
            created_at=now,
            body_json=body_json,
        )
        reserved = self.worker is not None and self.worker.reserve()
        if reserved:  # created already leased to this process's worker: it starts at once
            assert self.worker is not None
            record.status = Status.IN_PROGRESS.value
            record.lease_owner = self.worker.worker_id
            record.lease_expires = now + self.worker.config.lease_seconds
            record.attempts = 1
            # and its `response.in_progress` is committed with it: one write, one event batch
            # and one send to a streaming client fewer than the worker announcing it after
            record.body = {**queued, "status": Status.IN_PROGRESS.value}
            record.body_json = orjson.dumps(record.body)
            events.append(lifecycle_event("response.in_progress", record.body_json, 2))
        try:
            # the queue limits are checked in the create's own transaction (never overshot)
            stored = await self.store.create(
                record,
                events,
                idempotency_key,
                max_queued=self.limits.max_queued,
                max_queued_tenant=self.limits.max_queued_per_tenant,
            )
        except BaseException:
            if self.worker is not None and reserved:
                self.worker.run_reserved(None)
            if req.conversation is not None:
                await self.store.conversation_end(req.conversation, response_id, [])
            raise
        if req.conversation is not None and stored is not record:  # an idempotent repeat
            await self.store.conversation_end(req.conversation, response_id, [])
        if stored is record:
            metrics.response_created(req.model, True)
            state_change(record.id, _QUEUED, req.model, tenant=tenant, attempt=0)
        if self.worker is not None and reserved:
            self.worker.run_reserved(stored if stored is record else None)
        else:
            self.hub.wake_workers()
        stored_new, record = record, stored
        stream = None
        if req.stream:  # a new response's first events are known: no need to read them back
            stream = self.tail(record.id, -1, events if record is stored_new else None)
        return Created(record, stream, body_json if record is stored_new else None)

    async def count_input_tokens(self, body: Any, tenant: str) -> dict[str, Any]:
        """`POST /v1/responses/input_tokens`: the input a create with this body would send, counted
        by the backend that would serve it (nothing is stored, no conversation is locked)."""
        req = parse_create(body)
        route = self.router.resolve(req.model)
        if route is None:
            raise NotFound(
                f"The model `{req.model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        self._check_route(req, route)
        history: list[Any] | None = await self._history(req, tenant) if req.previous_response_id else None
        if req.conversation is not None:
            conv = await self.store.conversation_get(req.conversation)
            page = await self.store.conversation_items(req.conversation, None, 1_000_000, "asc")
            if conv is None or conv.tenant != tenant or page is None:
                raise ConversationNotFound(req.conversation, param="conversation")
            history = page[0]
        record = ResponseRecord(
            id="resp_count",
            tenant=tenant,
            status=Status.QUEUED.value,
            background=False,
            body={},
            input_items=req.input_items,
            request=run_request(req, history),
            created_at=time.time(),
        )
        count = await route.backend.count_input_tokens(model_request(record, self.sealer))
        return {"object": "response.input_tokens", "input_tokens": count}

    def _check_route(self, req: CreateRequest, route: Route) -> None:
        """What only some backends can do: hosted tools, files, bgmode's reasoning tokens."""
        if route.kind != "responses":
            for param, kind in hosted_tools(req.tools, req.tool_choice):
                raise InvalidRequest(
                    f"Tool type '{kind}' is not supported for model '{req.model}': hosted tools run only on "
                    f"an upstream /v1/responses route (this model is served by a '{route.kind}' backend).",
                    param=param,
                    code="unsupported_value",
                )
        if route.kind == "chat" and not getattr(getattr(route.backend, "options", None), "accept_files", False):
            if count_media(req.input_items)[1]:
                raise InvalidRequest(
                    f"Model '{req.model}' is served by a Chat Completions upstream that does not accept files "
                    "(set accept_files = true on its route if it does).",
                    param="input",
                    code="unsupported_value",
                )
        if self.sealer is not None:
            self.sealer.open_items(req.input_items)  # a token that does not verify is a 400 now

    async def _begin_turn(self, conversation: str, tenant: str, response_id: str, hold_until: float) -> list[Any]:
        """Lock the conversation for this response; its items are the context."""
        try:
            items = await self.store.conversation_begin(conversation, tenant, response_id, hold_until)
        except ConversationLocked as exc:
            raise InvalidRequest(
                f"Another response ('{exc.args[0]}') is in progress on conversation '{conversation}'; "
                "retry when it has finished.",
                param="conversation",
                code="conversation_locked",
            ) from None
        if items is None:
            raise ConversationNotFound(conversation, param="conversation")
        return items

    async def _end_turn(self, record: ResponseRecord, stored: bool) -> None:
        """A foreground turn's end: append its items (if it ended completed or incomplete and was
        stored) and release the conversation."""
        conv = record.request.get("conversation")
        if conv is None:
            return
        items: list[dict[str, Any]] = []
        if stored and record.status in (Status.COMPLETED, Status.INCOMPLETE):
            items = [*record.input_items, *(record.body.get("output") or ())]
        await self.store.conversation_end(conv, record.id, items)

    async def _history(self, req: CreateRequest, tenant: str) -> list[dict[str, Any]]:
        assert req.previous_response_id
        prev = await self.store.get(req.previous_response_id)
        if prev is None or prev.tenant != tenant:
            raise InvalidRequest(
                f"Previous response with id '{req.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        if prev.status not in TERMINAL_VALUES:
            raise InvalidRequest(
                f"Previous response with id '{req.previous_response_id}' is still {prev.status}; "
                "wait until it finishes.",
                param="previous_response_id",
                code="previous_response_not_finished",
            )
        return following(prev)

    async def _create_sync(
        self, req: CreateRequest, response_id: str, created_at: int, tenant: str, request: dict[str, Any]
    ) -> Created:
        body = response_object(req, response_id, created_at, Status.IN_PROGRESS.value)
        metrics.response_created(req.model, False)
        record = ResponseRecord(
            id=response_id,
            tenant=tenant,
            status=Status.IN_PROGRESS.value,
            background=False,
            body=body,
            input_items=req.input_items,
            request=request,
            created_at=time.time(),
        )
        if req.stream:
            return Created(record, self._sync_stream(record, req.store))
        stored = False
        try:
            async for _ in self._run_inline(record):
                pass
            if req.store:
                await self.store.create(record, [])
                stored = True
        finally:
            await asyncio.shield(self._end_turn(record, stored))
        return Created(record)

    async def _sync_stream(self, record: ResponseRecord, store: bool) -> AsyncIterator[bytes]:
        stored = False
        try:
            async for events in self._run_inline(record):
                for e in events:
                    yield frame(e)
            if store:
                await self.store.create(record, [])
                stored = True
        finally:
            await asyncio.shield(self._end_turn(record, stored))

    async def _run_inline(self, record: ResponseRecord) -> AsyncIterator[list[StoredEvent]]:
        """Run a non-background response in the request; the client disconnecting stops it."""
        builder = ResponseBuilder(record.body, 0, seal_for(record, self.sealer))
        yield [builder.lifecycle("response.created"), builder.lifecycle("response.in_progress")]
        request = model_request(record, self.sealer)
        builder.input_tokens_estimate = estimate_input_tokens(request)
        route = self.router.resolve(request.model)
        assert route is not None
        status, error, reason = Status.COMPLETED, None, None
        stream = route.backend.stream(request)
        first = True
        try:
            async for ev in stream:
                if isinstance(ev, Finish):
                    status, reason = ResponseBuilder.finish_status(ev)
                    break
                out = builder.feed(ev)
                if out:
                    if first:
                        first = False
                        metrics.first_token(request.model, record.created_at, time.time())
                    yield out
        except BackendError as exc:
            status, error = Status.FAILED, {"code": exc.code, "message": exc.message}
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        yield builder.terminal(status, error=error, incomplete_reason=reason)
        record.status = status.value
        now = time.time()
        metrics.response_finished(request.model, status.value, record.created_at, now, builder.body.get("usage"))
        state_change(
            record.id,
            status.value,
            request.model,
            tenant=record.tenant,
            route=route.kind,
            error=error,
            reason=reason,
            duration_ms=(now - record.created_at) * 1000,
            foreground=True,
        )

    # -- reading ------------------------------------------------------------------------------

    async def get(self, response_id: str, tenant: str) -> ResponseRecord:
        rec = await self.store.get(response_id)
        if rec is None or rec.tenant != tenant:
            raise ResponseNotFound(response_id)
        rec.body["status"] = rec.status
        return rec

    async def get_json(self, response_id: str, tenant: str) -> bytes:
        """The Response object as stored, serialised (a poll: nothing else is read or decoded)."""
        rec = await self.store.get(response_id, full=False)
        if rec is None or rec.tenant != tenant or rec.body_json is None:
            raise ResponseNotFound(response_id)
        return with_status(rec.body_json, rec.status)

    async def stream(self, response_id: str, tenant: str, starting_after: int | None) -> AsyncIterator[bytes]:
        rec = await self.store.get(response_id, full=False)
        if rec is None or rec.tenant != tenant:
            raise ResponseNotFound(response_id)
        if not rec.background:
            raise InvalidRequest(
                "This response cannot be streamed because it was not created with background=true.",
                param="stream",
                code="invalid_request_error",
            )
        if rec.events_purged:
            raise InvalidRequest(
                "The events of this response have expired and can no longer be streamed; "
                "retrieve it without stream=true.",
                param="stream",
                code="stream_expired",
            )
        after = -1 if starting_after is None else starting_after
        if after > rec.last_seq:
            raise InvalidRequest(
                f"Invalid 'starting_after': {after} is past the last event of this response "
                f"(sequence_number {rec.last_seq}).",
                param="starting_after",
                code="invalid_value",
            )
        if after == rec.last_seq and rec.status in TERMINAL_VALUES:
            return _nothing()  # the client has seen everything: close at once
        return self.tail(response_id, after)

    async def tail(self, response_id: str, after: int, first: list[StoredEvent] | None = None) -> AsyncIterator[bytes]:
        """Replay stored events after `after`, then follow live ones until the terminal event.

        Live events come from the hub when this process runs the response, else from the
        store (re-read on its wake-ups). Idle streams get a keep-alive comment. `first`: the
        committed events that follow `after`, when the caller has them (a create's own).
        """
        keepalive = self.limits.keepalive_seconds
        last = after
        with self.hub.subscribe(response_id) as live:
            idle_since = time.monotonic()
            while not self.shutting_down.is_set():
                if first is not None:
                    page, first = first, None
                else:
                    page = await self.store.events_after(response_id, last, 1000)
                if page:
                    if page[0].seq > last + 1:  # committed logs never have gaps: do not spin on one
                        log.error("the event log of %s has a gap after %d; ending the stream", response_id, last)
                        return
                    chunk, last, done = _frames(page, last)
                    yield chunk
                    if done:
                        return
                if len(page) == 1000:
                    continue
                if page:
                    idle_since = time.monotonic()
                # the fast path: committed batches handed over by this process's worker
                while (self.hub.running_here(response_id) or not live.empty()) and not self.shutting_down.is_set():
                    wait = min(1.0, max(0.0, keepalive - (time.monotonic() - idle_since)))
                    batch = await live.wait(wait)  # everything delivered so far: one send
                    if not batch:
                        if time.monotonic() - idle_since >= keepalive:
                            yield KEEPALIVE
                            idle_since = time.monotonic()
                        continue
                    before = last
                    chunk, last, done = _frames(batch, last)
                    if chunk:
                        yield chunk
                    if done:
                        return
                    if last < batch[-1].seq:
                        break  # a gap (we subscribed late): the store has every committed event
                    if last > before:
                        idle_since = time.monotonic()
                else:
                    await self.store.wait_for_events(response_id, last, 0.25)
                if time.monotonic() - idle_since >= keepalive:
                    yield KEEPALIVE
                    idle_since = time.monotonic()
                    rec = await self.store.get(response_id)
                    if rec is None or (rec.status in TERMINAL_VALUES and rec.last_seq <= last):
                        return

    async def input_items(
        self, response_id: str, tenant: str, limit: int, order: str, after: str | None
    ) -> dict[str, Any]:
        rec = await self.get(response_id, tenant)
        items = rec.input_items if order == "asc" else list(reversed(rec.input_items))
        if after is not None:
            ids = [it["id"] for it in items]
            if after not in ids:
                raise InvalidRequest(f"No input item with id '{after}' in this response.", param="after")
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }

    # -- changing -----------------------------------------------------------------------------

    async def cancel(self, response_id: str, tenant: str) -> ResponseRecord:
        deadline = time.monotonic() + self.limits.cancel_wait_seconds
        while True:
            rec = await self.get(response_id, tenant)
            if not rec.background:
                raise InvalidRequest("Cannot cancel a synchronous response.")
            if rec.status == Status.CANCELLED:
                return rec
            if rec.status in TERMINAL_VALUES:
                raise InvalidRequest(f"Cannot cancel a {rec.status} response.")
            if rec.status == Status.QUEUED:
                builder = ResponseBuilder(rec.body, rec.last_seq + 1)
                events = builder.terminal(Status.CANCELLED)
                if await self.store.cancel_queued(rec.id, builder.body, events):
                    self.hub.publish(rec.id, events)
                    rec.status = Status.CANCELLED.value
                    rec.body = builder.body
                    model = rec.body.get("model")
                    now = time.time()
                    metrics.response_finished(model, rec.status, rec.created_at, now, None)
                    state_change(
                        rec.id,
                        rec.status,
                        model,
                        tenant=tenant,
                        attempt=rec.attempts,
                        duration_ms=(now - rec.created_at) * 1000,
                    )
                    return rec
                continue  # a worker claimed it meanwhile: cancel it as in_progress
            # in_progress
            await self.store.request_cancel(rec.id)
            self.hub.cancel(rec.id)
            settled = await self._wait_terminal(rec.id, tenant, deadline)
            if settled is not None:
                return settled
            stale = await self.store.takeover(rec.id, self._owner, self.limits.lease_seconds)
            if stale is not None:  # its worker is gone: settle it here
                await Worker.settle_lost(stale, self._owner, self.store, self.sealer, cancel=True, router=self.router)
                return await self.get(response_id, tenant)
            return await self.get(response_id, tenant)

    async def _wait_terminal(self, response_id: str, tenant: str, deadline: float) -> ResponseRecord | None:
        with self.hub.subscribe(response_id) as live:
            while True:
                rec = await self.get(response_id, tenant)
                if rec.status in TERMINAL_VALUES:
                    return rec
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if self.hub.running_here(response_id):
                    await live.wait(min(left, 0.5))
                else:
                    await self.store.wait_for_events(response_id, rec.last_seq, min(left, 0.1))

    async def delete(self, response_id: str, tenant: str) -> dict[str, Any]:
        rec = await self.get(response_id, tenant)
        self.hub.cancel(rec.id)
        await self.store.delete(rec.id)
        return {"id": rec.id, "object": "response", "deleted": True}


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


def with_status(body_json: bytes, status: str) -> bytes:
    """`body_json` with its top-level `status` set to `status` (the row's status column is the
    truth; the stored body can lag it between a claim or requeue and the next write). bgmode
    serialises `id`, `object`, `created_at` first, so the first `"status":"` is the top-level one."""
    i = body_json.find(b'"status":"')
    if i < 0:
        return body_json
    i += 10
    j = body_json.find(b'"', i)
    if body_json[i:j] == status.encode():
        return body_json
    return body_json[:i] + status.encode() + body_json[j:]


def _frames(events: list[StoredEvent], last: int) -> tuple[bytes, int, bool]:
    """The SSE frames of the events that follow `last` without a gap, as one chunk; the new
    cursor; whether the terminal event was among them (nothing after it is sent)."""
    out: list[bytes] = []
    for e in events:
        if e.seq <= last:
            continue
        if e.seq > last + 1:
            break
        out.append(frame(e))
        last = e.seq
        if e.type in TERMINAL_EVENT_TYPES:
            return b"".join(out), last, True
    return b"".join(out), last, False


__all__ = ["Created", "Limits", "Service"]
