"""Turn backend deltas into Responses stream events, keeping the Response object in step.

One `ResponseBuilder` per run of a response. It numbers events (the single writer of a
response's sequence numbers is whoever holds its builder: the API for `created`/`queued`,
then the worker holding the lease), serialises each event's JSON exactly once, and keeps
`body` (the Response object) consistent with the events it has emitted.

Event order for one response (text only):

    response.created (0) → response.queued (1, background only) → response.in_progress
    → [reasoning item: output_item.added → reasoning_text.delta* → reasoning_text.done
       → output_item.done]
    → message item: output_item.added → content_part.added → output_text.delta*
      → output_text.done → content_part.done → output_item.done
    → response.completed | response.incomplete | response.failed | response.cancelled
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from bgmode.backends.base import BackendEvent, Finish, ReasoningDelta, TextDelta, Usage
from bgmode.protocol import new_id, usage_object
from bgmode.records import Status, StoredEvent

#: the terminal stream event for each terminal status. `response.cancelled` is ours: OpenAI's
#: spec has no cancelled stream event (only a webhook of that name); its `response.status`
#: is "cancelled", and SDKs parse unknown event types loosely.
TERMINAL_EVENT = {
    Status.COMPLETED: "response.completed",
    Status.INCOMPLETE: "response.incomplete",
    Status.FAILED: "response.failed",
    Status.CANCELLED: "response.cancelled",
}
TERMINAL_EVENT_TYPES = frozenset(TERMINAL_EVENT.values())


class ResponseBuilder:
    """Numbers and serialises the events of one response, and keeps its `body` current."""

    def __init__(self, body: dict[str, Any], next_seq: int) -> None:
        self.body = body
        self.seq = next_seq
        self._item: dict[str, Any] | None = None
        self._parts: list[str] = []
        self._usage: Usage | None = None
        self._deltas = 0
        self._reasoning_deltas = 0
        #: the worker's estimate, used when the backend reports no usage (cancel, failure)
        self.input_tokens_estimate = 0

    @property
    def output_started(self) -> bool:
        return bool(self.body["output"])

    def event(self, type_: str, payload: dict[str, Any]) -> StoredEvent:
        payload["type"] = type_
        payload["sequence_number"] = self.seq
        ev = StoredEvent(self.seq, type_, orjson.dumps(payload))
        self.seq += 1
        return ev

    def lifecycle(self, type_: str, body_json: bytes | None = None) -> StoredEvent:
        """`response.created` / `.queued` / `.in_progress`, carrying the whole Response.

        With `body_json` (the Response already serialised) the event is assembled from it
        rather than serialising the Response again.
        """
        if body_json is None:
            return self.event(type_, {"response": self.body})
        data = b'{"type":"%s","response":%s,"sequence_number":%d}' % (type_.encode(), body_json, self.seq)
        ev = StoredEvent(self.seq, type_, data)
        self.seq += 1
        return ev

    def set_status(self, status: str) -> None:
        self.body["status"] = status

    def feed(self, ev: BackendEvent) -> list[StoredEvent]:
        """Events for one backend delta (none for usage and finish; see `terminal`)."""
        if isinstance(ev, TextDelta):
            out = self._open("message") if self._kind != "message" else []
            self._parts.append(ev.text)
            self._deltas += 1
            out.append(
                self.event(
                    "response.output_text.delta",
                    {
                        "item_id": self._item_id,
                        "output_index": self._index,
                        "content_index": 0,
                        "delta": ev.text,
                        "logprobs": [],
                    },
                )
            )
            return out
        if isinstance(ev, ReasoningDelta):
            out = self._open("reasoning") if self._kind != "reasoning" else []
            self._parts.append(ev.text)
            self._deltas += 1
            self._reasoning_deltas += 1
            out.append(
                self.event(
                    "response.reasoning_text.delta",
                    {
                        "item_id": self._item_id,
                        "output_index": self._index,
                        "content_index": 0,
                        "delta": ev.text,
                    },
                )
            )
            return out
        if isinstance(ev, Usage):
            self._usage = ev
        return []

    @property
    def _kind(self) -> str | None:
        return None if self._item is None else str(self._item["type"])

    @property
    def _item_id(self) -> str:
        assert self._item is not None
        return str(self._item["id"])

    @property
    def _index(self) -> int:
        return len(self.body["output"]) - 1

    def _open(self, kind: str) -> list[StoredEvent]:
        out = self._close("completed")
        if kind == "message":
            item: dict[str, Any] = {
                "id": new_id("msg"),
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            }
        else:
            item = {
                "id": new_id("rs"),
                "type": "reasoning",
                "summary": [],
                "content": [],
                "status": "in_progress",
            }
        self._item = item
        self._parts = []
        self.body["output"].append(item)
        out.append(self.event("response.output_item.added", {"output_index": self._index, "item": dict(item)}))
        if kind == "message":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            item["content"] = [part]
            out.append(
                self.event(
                    "response.content_part.added",
                    {
                        "item_id": item["id"],
                        "output_index": self._index,
                        "content_index": 0,
                        "part": dict(part),
                    },
                )
            )
        else:
            item["content"] = [{"type": "reasoning_text", "text": ""}]
        return out

    def snapshot(self) -> dict[str, Any]:
        """The Response object with the open item's text materialised (for polls)."""
        if self._item is not None:
            self._item["content"][0]["text"] = "".join(self._parts)
        return self.body

    def _close(self, status: str) -> list[StoredEvent]:
        item = self._item
        if item is None:
            return []
        text = "".join(self._parts)
        idx = self._index
        item["status"] = status
        out: list[StoredEvent] = []
        if item["type"] == "message":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
            item["content"] = [part]
            common = {"item_id": item["id"], "output_index": idx, "content_index": 0}
            out.append(self.event("response.output_text.done", {**common, "text": text, "logprobs": []}))
            out.append(self.event("response.content_part.done", {**common, "part": part}))
        else:
            item["content"] = [{"type": "reasoning_text", "text": text}]
            out.append(
                self.event(
                    "response.reasoning_text.done",
                    {"item_id": item["id"], "output_index": idx, "content_index": 0, "text": text},
                )
            )
        out.append(self.event("response.output_item.done", {"output_index": idx, "item": item}))
        self._item = None
        self._parts = []
        return out

    def terminal(
        self,
        status: Status,
        *,
        error: dict[str, Any] | None = None,
        incomplete_reason: str | None = None,
    ) -> list[StoredEvent]:
        """Close any open item, settle the Response object and emit the terminal event."""
        out = self._close("completed" if status == Status.COMPLETED else "incomplete")
        b = self.body
        b["status"] = status.value
        b["error"] = error
        b["incomplete_details"] = {"reason": incomplete_reason} if incomplete_reason else None
        b["completed_at"] = int(time.time()) if status == Status.COMPLETED else None
        u = self._usage or Usage(self.input_tokens_estimate, self._deltas, self._reasoning_deltas)
        b["usage"] = usage_object(u.input_tokens, u.output_tokens, u.reasoning_tokens, u.cached_tokens)
        out.append(self.event(TERMINAL_EVENT[status], {"response": b}))
        return out

    @staticmethod
    def finish_status(fin: Finish) -> tuple[Status, str | None]:
        if fin.reason is None:
            return Status.COMPLETED, None
        return Status.INCOMPLETE, fin.reason


def replay(body: dict[str, Any], events: list[StoredEvent]) -> ResponseBuilder:
    """A builder positioned after `events`, with `body.output` rebuilt from the log itself.

    Used when a response is settled by someone other than its lost worker: the stored
    snapshot may lag the log, so the output is recomputed from the deltas that were stored.
    """
    body = dict(body)
    body["output"] = []
    b = ResponseBuilder(body, events[-1].seq + 1 if events else 0)
    for e in events:
        if e.type == "response.output_item.added":
            item = orjson.loads(e.data)["item"]
            b._item = item
            b._parts = []
            body["output"].append(item)
            if item["type"] == "message":
                item["content"] = [{"type": "output_text", "annotations": [], "logprobs": [], "text": ""}]
            else:
                item["content"] = [{"type": "reasoning_text", "text": ""}]
        elif e.type in ("response.output_text.delta", "response.reasoning_text.delta"):
            b._parts.append(orjson.loads(e.data)["delta"])
            b._deltas += 1
            if e.type == "response.reasoning_text.delta":
                b._reasoning_deltas += 1
        elif e.type == "response.output_item.done" and b._item is not None:
            item = orjson.loads(e.data)["item"]
            body["output"][-1] = item
            b._item = None
            b._parts = []
    return b
