"""The worker's flusher against a real SQLite store: what one flush round writes when the store
refuses part of it."""

from __future__ import annotations

from pathlib import Path

from bgmode.events import ResponseBuilder
from bgmode.hub import Hub
from bgmode.records import ResponseRecord, Status
from bgmode.routing import Router
from bgmode.store import Write, WriteResult, open_store
from bgmode.worker import Worker


async def test_a_refused_finish_does_not_take_earlier_events_with_it(tmp_path: Path) -> None:
    """A progress write and a finishing write of one response, flushed in the same round, with a
    cancel committed first: the finish is refused (CANCEL_REQUESTED) but the progress write is
    stored, so the log stays gap-free for the cancelled finish that follows."""
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    await store.open()
    worker = Worker(store, Router.simulated(), Hub())
    body = {"id": "resp_1", "object": "response", "status": "in_progress", "output": [], "max_tool_calls": None}
    b = ResponseBuilder(body, 0)
    first = [b.lifecycle("response.created"), b.lifecycle("response.queued")]
    rec = ResponseRecord(
        id="resp_1",
        tenant="t",
        status=Status.IN_PROGRESS.value,
        background=True,
        body=body,
        input_items=[],
        request={"model": "m"},
        created_at=1.0,
        lease_owner=worker.worker_id,
        lease_expires=2e9,
    )
    await store.create(rec, first)
    await worker.start()
    try:
        assert await store.request_cancel("resp_1")
        worker.submit(None, Write("resp_1", [b.lifecycle("response.in_progress")], b.body))
        done = worker.submit_and_wait(None, Write("resp_1", b.terminal(Status.COMPLETED), b.body, "completed"))
        assert await done is WriteResult.CANCEL_REQUESTED
        stored = await store.events_after("resp_1", -1)
        assert [(e.seq, e.type) for e in stored] == [
            (0, "response.created"),
            (1, "response.queued"),
            (2, "response.in_progress"),
        ]
    finally:
        await worker.stop(grace=0)
        await store.close()
