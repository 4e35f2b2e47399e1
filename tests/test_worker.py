"""The worker's flusher against a real SQLite store: what one flush round writes when the store
refuses part of it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bgmode import worker as worker_module
from bgmode.backends.base import Backend, BackendEvent, Finish, ModelRequest, TextDelta, Usage
from bgmode.events import TERMINAL_EVENT_TYPES, ResponseBuilder
from bgmode.hub import Hub
from bgmode.records import ResponseRecord, Status
from bgmode.routing import Route, Router
from bgmode.store import Store, Write, WriteResult, open_store
from bgmode.store.sqlite import SQLiteStore
from bgmode.worker import Worker, WorkerConfig


async def _create(
    store: Store, status: Status, lease_owner: str | None = None, response_id: str = "resp_1"
) -> ResponseBuilder:
    """Store a response with its first two events (queued, or already leased to `lease_owner`);
    returns the builder that made them."""
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "status": status.value,
        "output": [],
        "max_tool_calls": None,
    }
    b = ResponseBuilder(dict(body), 0)
    rec = ResponseRecord(
        id=response_id,
        tenant="t",
        status=status.value,
        background=True,
        body=body,
        input_items=[],
        request={"model": "m"},
        created_at=time.time(),
        lease_owner=lease_owner,
        lease_expires=2e9 if lease_owner else None,
    )
    await store.create(rec, [b.lifecycle("response.created"), b.lifecycle("response.queued")])
    return b


#: a started response's log: created, queued, in_progress
_STARTED = [(0, "response.created"), (1, "response.queued"), (2, "response.in_progress")]


async def _log(store: Store, response_id: str) -> list[tuple[int, str]]:
    """A response's stored log: (sequence number, type) per event."""
    return [(e.seq, e.type) for e in await store.events_after(response_id, -1)]


async def test_a_refused_finish_does_not_take_earlier_events_with_it(tmp_path: Path) -> None:
    """A progress write and a finishing write of one response, flushed in the same round, with a
    cancel committed first: the finish is refused (CANCEL_REQUESTED) but the progress write is
    stored, so the log stays gap-free for the cancelled finish that follows."""
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    await store.open()
    worker = Worker(store, Router.simulated(), Hub())
    b = await _create(store, Status.IN_PROGRESS, lease_owner=worker.worker_id)
    await worker.start()
    try:
        assert await store.request_cancel("resp_1")
        worker.submit(None, Write("resp_1", [b.lifecycle("response.in_progress")], b.body))
        done = worker.submit_and_wait(None, Write("resp_1", b.terminal(Status.COMPLETED), b.body, "completed"))
        assert await done is WriteResult.CANCEL_REQUESTED
        assert await _log(store, "resp_1") == _STARTED
    finally:
        await worker.stop(grace=0)
        await store.close()


class _Gated(Backend):
    """Streams some text, then waits for `go` before streaming the rest and stopping normally."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.streamed = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[BackendEvent]:
        for word in ("one ", "two ", "three "):
            yield TextDelta(word)
        self.streamed.set()
        await self.go.wait()
        yield TextDelta("four")
        yield Usage(7, 4)
        yield Finish()


async def test_a_finish_refused_by_an_earlier_cancel_ends_cancelled_with_all_the_output(tmp_path: Path) -> None:
    """The model finishes normally, but a cancel was committed first and the worker has not
    heard of it (it learns of cancels on its next heartbeat): the store refuses the completion
    and the worker writes the cancelled terminal instead, built from the stored log plus what
    it had not flushed yet. The log stays 0..n, the open message is closed `incomplete` with
    every delta in it, and the backend's usage is kept."""
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    await store.open()
    backend = _Gated()
    router = Router({"*": Route("*", backend, "sim")})
    worker = Worker(store, router, Hub(), WorkerConfig(concurrency=1, heartbeat_seconds=3600))
    await _create(store, Status.QUEUED)
    await worker.start()
    try:
        await asyncio.wait_for(backend.streamed.wait(), 10)
        assert await store.request_cancel("resp_1")
        backend.go.set()
        deadline = time.monotonic() + 10
        while (got := await store.get("resp_1")) is not None and got.status == "in_progress":
            assert time.monotonic() < deadline, "the response never ended"
            await asyncio.sleep(0.01)
        assert got is not None and got.status == "cancelled"
        events = await store.events_after("resp_1", -1)
        assert [e.seq for e in events] == list(range(len(events)))
        terminal = [e for e in events if e.type in TERMINAL_EVENT_TYPES]
        assert terminal == [events[-1]]  # one terminal event, the last one
        final = orjson.loads(events[-1].data)["response"]
        assert final["status"] == "cancelled"
        deltas = "".join(orjson.loads(e.data)["delta"] for e in events if e.type == "response.output_text.delta")
        assert deltas == "one two three four"
        assert got.body["status"] == "cancelled"
        [message] = final["output"]
        assert message["status"] == "incomplete"
        assert message["content"][0]["text"] == "one two three four"
        assert final["usage"]["input_tokens"] == 7 and final["usage"]["output_tokens"] == 4
        assert got.body["output"] == final["output"]
    finally:
        await worker.stop(grace=0)
        await store.close()


class _FailsOnce(SQLiteStore):
    """A SQLite store whose `fail_call`-th write fails (as a full disk would), once."""

    def __init__(self, path: str, fail_call: int) -> None:
        super().__init__(path)
        self.calls = 0
        self.fail_call = fail_call

    async def write(self, worker_id: str, writes: list[Write]) -> list[WriteResult]:
        self.calls += 1
        if self.calls == self.fail_call:
            raise sqlite3.OperationalError("database or disk is full")
        return await super().write(worker_id, writes)


async def test_a_round_written_in_parts_retries_only_the_parts_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush round goes to the store in parts (`WRITE_CHUNK` responses each); when one part
    fails, it and the parts after it are retried, the parts before it are not written twice:
    every log stays 0..n, every waiter hears OK once."""
    monkeypatch.setattr(worker_module, "WRITE_CHUNK", 1)
    store = _FailsOnce(str(tmp_path / "w.db"), fail_call=2)
    await store.open()
    worker = Worker(store, Router.simulated(), Hub())
    ids = ["resp_a", "resp_b", "resp_c"]
    builders = [await _create(store, Status.IN_PROGRESS, worker.worker_id, rid) for rid in ids]
    await worker.start()
    try:
        done = [
            worker.submit_and_wait(None, Write(rid, [b.lifecycle("response.in_progress")], b.body))
            for rid, b in zip(ids, builders, strict=True)
        ]
        assert await asyncio.wait_for(asyncio.gather(*done), 10) == [WriteResult.OK] * 3
        assert store.calls == 4  # a, then b failed, then b and c again
        for rid in ids:
            assert await _log(store, rid) == _STARTED
    finally:
        await worker.stop(grace=0)
        await store.close()
