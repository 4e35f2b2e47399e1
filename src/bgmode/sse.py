"""Server-sent events as OpenAI frames them: `event:` + `data:` lines, no `id:`, no `[DONE]`.

Each event's JSON was serialised once when it was made (`StoredEvent.data`); a frame is
that JSON wrapped, never re-encoded. Idle streams get SSE comment lines, which every SSE
parser ignores (typed keepalive events would break the SDK's stream helper).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.types import Receive, Scope, Send

from bgmode import metrics
from bgmode.records import StoredEvent

KEEPALIVE = b": keep-alive\n\n"
_START_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def frame(e: StoredEvent) -> bytes:
    return b"event: " + e.type.encode() + b"\ndata: " + e.data + b"\n\n"


class EventStream:
    """A `text/event-stream` ASGI response whose body is already framed, counted in
    `bgmode_sse_streams` while it is sent.

    Not Starlette's `StreamingResponse`: that one runs an anyio task group (two tasks and
    cancel scopes) per stream, which under a burst of 200 streamed creates held every
    runner back by tens of milliseconds (`bench/relay.py`). Here the stream is sent by the
    request's own task, and one plain task waits for the client's disconnect and cancels
    it: a client that goes away stops its tail at once (uvicorn's `send` alone would
    swallow the writes until the response ends)."""

    def __init__(self, frames: AsyncIterator[bytes], request_id: bytes | None = None) -> None:
        self.frames = frames
        self.headers = list(_START_HEADERS)
        if request_id is not None:
            self.headers.append((b"x-request-id", request_id))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        me = asyncio.current_task()
        assert me is not None
        sending = True
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            if sending:
                me.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        metrics.SSE_STREAMS.inc()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            async for chunk in self.frames:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            me.uncancel()  # the client left: not a cancel of this request's task
        finally:
            sending = False
            watcher.cancel()
            metrics.SSE_STREAMS.dec()
            aclose = getattr(self.frames, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
