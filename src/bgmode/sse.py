"""Server-sent events as OpenAI frames them: `event:` + `data:` lines, no `id:`, no `[DONE]`.

Each event's JSON was serialised once when it was made (`StoredEvent.data`); a frame is
that JSON wrapped, never re-encoded. Idle streams get SSE comment lines, which every SSE
parser ignores (typed keepalive events would break the SDK's stream helper).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from bgmode.records import StoredEvent

KEEPALIVE = b": keep-alive\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def frame(e: StoredEvent) -> bytes:
    return b"event: " + e.type.encode() + b"\ndata: " + e.data + b"\n\n"


class EventStream(StreamingResponse):
    """A `text/event-stream` response whose body is already framed."""

    def __init__(self, frames: AsyncIterator[bytes], background: BackgroundTask | None = None) -> None:
        super().__init__(frames, media_type="text/event-stream; charset=utf-8", headers=HEADERS, background=background)
