"""Turn a backend's typed output into Responses stream events, keeping the Response in step.

One `ResponseBuilder` per run of a response. It numbers events (the single writer of a
response's sequence numbers is whoever holds its builder: the API for `created`/`queued`,
then the worker holding the lease), serialises each event's JSON exactly once, and keeps
`body` (the Response object) consistent with the events it has emitted.

Event order for one response (every type is in OpenAI's spec, so both SDKs' stream helpers
parse it):

    response.created (0) → response.queued (1, background only) → response.in_progress
    → reasoning item: output_item.added
        → [reasoning_summary_part.added → reasoning_summary_text.delta* → .done
           → reasoning_summary_part.done]*
        → [content_part.added → reasoning_text.delta* → reasoning_text.done → content_part.done]
        → output_item.done (with encrypted_content when asked for)
    → message item: output_item.added
        → [content_part.added → output_text.delta* (annotation.added*) → output_text.done
           → content_part.done]  and/or  [content_part.added → refusal.delta* → refusal.done
           → content_part.done]
        → output_item.done
    → function_call item: output_item.added (arguments "") → function_call_arguments.delta*
        → function_call_arguments.done (name, arguments) → output_item.done
    → relayed upstream items (hosted tools): their own events, renumbered
    → response.completed | response.incomplete | response.failed

A cancelled response ends with `response.failed` whose `response.status` is "cancelled":
OpenAI's spec has no cancelled stream event; `response.failed` is one every SDK knows, and it
carries the true status (responses-items.md §9). Logs written by older bgmode versions may end
with `response.cancelled`, which readers still treat as terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from bgmode.backends.base import (
    Annotation,
    BackendEvent,
    Finish,
    ItemEnd,
    Passthrough,
    ReasoningDelta,
    ReasoningToken,
    RefusalDelta,
    TextDelta,
    ToolArguments,
    ToolCall,
    Usage,
)
from bgmode.ids import new_id
from bgmode.protocol import usage_object
from bgmode.records import Status, StoredEvent

#: the terminal stream event for each terminal status
TERMINAL_EVENT = {
    Status.COMPLETED: "response.completed",
    Status.INCOMPLETE: "response.incomplete",
    Status.FAILED: "response.failed",
    Status.CANCELLED: "response.failed",
}
#: event types that end a log (`response.cancelled`: logs of bgmode before 0.2)
TERMINAL_EVENT_TYPES = frozenset({*TERMINAL_EVENT.values(), "response.cancelled"})

#: a function that seals a finished reasoning item into an `encrypted_content` token
Sealer = Callable[[dict[str, Any]], str]

_MESSAGE_PARTS = ("output_text", "refusal")
_TEXT_DONE = {
    "output_text": ("response.output_text.done", "text"),
    "refusal": ("response.refusal.done", "refusal"),
    "reasoning_text": ("response.reasoning_text.done", "text"),
}


def lifecycle_event(type_: str, body_json: bytes, seq: int) -> StoredEvent:
    """A lifecycle event (`response.created`, ...) at `seq`, assembled around the Response
    already serialised (a background create's first two: no builder needed)."""
    return StoredEvent(
        seq, type_, b'{"type":"%s","response":%s,"sequence_number":%d}' % (type_.encode(), body_json, seq)
    )


class ResponseBuilder:
    """Numbers and serialises the events of one response, and keeps its `body` current."""

    def __init__(self, body: dict[str, Any], next_seq: int, seal: Sealer | None = None) -> None:
        self.body = body
        self.seq = next_seq
        self.seal = seal
        #: the open item (in body["output"]) and its kind
        self._item: dict[str, Any] | None = None
        self._kind: str | None = None
        self._item_index = 0
        #: the open part of the open item: its dict, kind, index and text so far
        self._part: dict[str, Any] | None = None
        self._part_kind: str | None = None
        self._part_index = 0
        self._summary_part = -1
        self._parts: list[str] = []
        self._token: str | None = None
        #: upstream output_index → ours, for relayed items
        self._relayed: dict[Any, int] = {}
        self._calls = 0
        self._dropping = False
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
        ev = lifecycle_event(type_, body_json, self.seq)
        self.seq += 1
        return ev

    def set_status(self, status: str) -> None:
        self.body["status"] = status

    # -- feeding ------------------------------------------------------------------------------

    def feed(self, ev: BackendEvent) -> list[StoredEvent]:
        """Events for one backend output (none for usage and finish; see `terminal`)."""
        if isinstance(ev, TextDelta):  # the hot path: one delta into an open text part
            out = self._start_part("output_text") if self._part_kind != "output_text" else []
            self._parts.append(ev.text)
            self._deltas += 1
            out.append(
                self.event(
                    "response.output_text.delta",
                    {
                        "item_id": self._item_id,
                        "output_index": self._index,
                        "content_index": self._part_index,
                        "delta": ev.text,
                        "logprobs": [],
                    },
                )
            )
            return out
        if isinstance(ev, ToolArguments):
            if self._dropping or self._kind != "function_call":
                return []
            self._parts.append(ev.delta)
            self._deltas += 1
            return [
                self.event(
                    "response.function_call_arguments.delta",
                    {"item_id": self._item_id, "output_index": self._index, "delta": ev.delta},
                )
            ]
        self._dropping = False
        if isinstance(ev, ReasoningDelta):
            return self._reasoning(ev)
        if isinstance(ev, RefusalDelta):
            out = self._start_part("refusal") if self._part_kind != "refusal" else []
            self._parts.append(ev.text)
            self._deltas += 1
            out.append(
                self.event(
                    "response.refusal.delta",
                    {
                        "item_id": self._item_id,
                        "output_index": self._index,
                        "content_index": self._part_index,
                        "delta": ev.text,
                    },
                )
            )
            return out
        if isinstance(ev, ToolCall):
            limit = self.body.get("max_tool_calls")
            if limit is not None and self._calls >= limit:
                self._dropping = True  # "further attempts to call a tool are ignored"
                return []
            self._calls += 1
            out = self._close_item("completed")
            item = {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "arguments": "",
                "call_id": ev.call_id,
                "name": ev.name,
            }
            out.append(self._add_item(item, "function_call"))
            self._part, self._part_kind, self._parts = item, "arguments", []
            return out
        if isinstance(ev, Usage):
            self._usage = ev
            return []
        if isinstance(ev, ItemEnd):
            return self._close_item("completed")
        if isinstance(ev, Annotation):
            if self._part_kind != "output_text" or self._part is None:
                return []
            anns = self._part["annotations"]
            anns.append(ev.annotation)
            return [
                self.event(
                    "response.output_text.annotation.added",
                    {
                        "item_id": self._item_id,
                        "output_index": self._index,
                        "content_index": self._part_index,
                        "annotation_index": len(anns) - 1,
                        "annotation": ev.annotation,
                    },
                )
            ]
        if isinstance(ev, ReasoningToken):
            if self._kind == "reasoning":
                self._token = ev.encrypted_content
            else:
                for item in reversed(self.body["output"]):
                    if item.get("type") == "reasoning":
                        item["encrypted_content"] = ev.encrypted_content
                        break
            return []
        if isinstance(ev, Passthrough):
            return self._relay(ev.event)
        return []

    def _reasoning(self, ev: ReasoningDelta) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        if ev.summary:
            if self._part_kind != "summary" or self._summary_part != ev.part:
                out = self._start_part("summary")
                self._summary_part = ev.part
            self._parts.append(ev.text)
            self._deltas += 1
            self._reasoning_deltas += 1
            out.append(
                self.event(
                    "response.reasoning_summary_text.delta",
                    {
                        "item_id": self._item_id,
                        "output_index": self._index,
                        "summary_index": self._part_index,
                        "delta": ev.text,
                    },
                )
            )
            return out
        if self._part_kind != "reasoning_text":
            out = self._start_part("reasoning_text")
        self._parts.append(ev.text)
        self._deltas += 1
        self._reasoning_deltas += 1
        out.append(
            self.event(
                "response.reasoning_text.delta",
                {
                    "item_id": self._item_id,
                    "output_index": self._index,
                    "content_index": self._part_index,
                    "delta": ev.text,
                },
            )
        )
        return out

    # -- items and parts ----------------------------------------------------------------------

    @property
    def _item_id(self) -> str:
        assert self._item is not None
        return str(self._item["id"])

    @property
    def _index(self) -> int:
        return self._item_index

    def _add_item(self, item: dict[str, Any], kind: str) -> StoredEvent:
        self._item, self._kind = item, kind
        self.body["output"].append(item)
        self._item_index = len(self.body["output"]) - 1
        return self.event("response.output_item.added", {"output_index": self._item_index, "item": item})

    def _start_part(self, kind: str) -> list[StoredEvent]:
        """Close the open part (or the open item, when `kind` needs another item), open `kind`."""
        want = "message" if kind in _MESSAGE_PARTS else "reasoning"
        if self._kind != want:
            out = self._close_item("completed")
            if want == "message":
                item: dict[str, Any] = {
                    "id": new_id("msg"),
                    "type": "message",
                    "status": "in_progress",
                    "content": [],
                    "role": "assistant",
                }
            else:
                item = {"id": new_id("rs"), "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
            out.append(self._add_item(item, want))
        else:
            out = self._close_part()
        assert self._item is not None
        common = {"item_id": self._item["id"], "output_index": self._item_index}
        if kind == "summary":
            part: dict[str, Any] = {"type": "summary_text", "text": ""}
            self._item["summary"].append(part)
            self._part_index = len(self._item["summary"]) - 1
            out.append(
                self.event(
                    "response.reasoning_summary_part.added", {**common, "summary_index": self._part_index, "part": part}
                )
            )
        else:
            if kind == "output_text":
                part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            elif kind == "refusal":
                part = {"type": "refusal", "refusal": ""}
            else:
                part = {"type": "reasoning_text", "text": ""}
            self._item["content"].append(part)
            self._part_index = len(self._item["content"]) - 1
            out.append(
                self.event("response.content_part.added", {**common, "content_index": self._part_index, "part": part})
            )
        self._part, self._part_kind, self._parts = part, kind, []
        return out

    def _close_part(self) -> list[StoredEvent]:
        part, kind = self._part, self._part_kind
        if part is None or kind is None or self._item is None:
            return []
        text = "".join(self._parts)
        self._part, self._part_kind, self._parts = None, None, []
        common = {"item_id": self._item["id"], "output_index": self._item_index}
        if kind == "arguments":
            part["arguments"] = text
            return [
                self.event(
                    "response.function_call_arguments.done",
                    {**common, "name": part["name"], "arguments": text},
                )
            ]
        if kind == "summary":
            part["text"] = text
            idx = {"summary_index": self._part_index}
            return [
                self.event("response.reasoning_summary_text.done", {**common, **idx, "text": text}),
                self.event("response.reasoning_summary_part.done", {**common, **idx, "part": part}),
            ]
        done_type, field = _TEXT_DONE[kind]
        part[field] = text
        idx = {"content_index": self._part_index}
        done: dict[str, Any] = {**common, **idx, field: text}
        if kind == "output_text":
            done["logprobs"] = []
        return [
            self.event(done_type, done),
            self.event("response.content_part.done", {**common, **idx, "part": part}),
        ]

    def _close_item(self, status: str) -> list[StoredEvent]:
        item = self._item
        if item is None:
            return []
        out = self._close_part()
        item["status"] = status
        if self._kind == "reasoning":
            if self._token is not None:
                item["encrypted_content"] = self._token
            elif self.seal is not None:
                item["encrypted_content"] = self.seal(item)
        out.append(self.event("response.output_item.done", {"output_index": self._item_index, "item": item}))
        self._item = self._kind = None
        self._token = None
        self._summary_part = -1
        return out

    def _relay(self, upstream: dict[str, Any]) -> list[StoredEvent]:
        kind = upstream.get("type")
        if not isinstance(kind, str):
            return []
        payload = {k: v for k, v in upstream.items() if k not in ("type", "sequence_number")}
        their = payload.get("output_index")
        if kind == "response.output_item.added" and isinstance(payload.get("item"), dict):
            out = self._close_item("completed")
            item = dict(payload["item"])
            self.body["output"].append(item)
            ours = self._relayed[their] = len(self.body["output"]) - 1
            payload["output_index"] = ours
            out.append(self.event(kind, payload))
            return out
        ours_or_none = self._relayed.get(their)
        if kind == "response.output_item.done" and isinstance(payload.get("item"), dict):
            out = []
            if ours_or_none is None:  # done without added: add it now
                out = self._close_item("completed")
                self.body["output"].append(payload["item"])
                ours_or_none = self._relayed[their] = len(self.body["output"]) - 1
            self.body["output"][ours_or_none] = dict(payload["item"])
            payload["output_index"] = ours_or_none
            out.append(self.event(kind, payload))
            return out
        if ours_or_none is None:
            return []  # an event for an item we never saw added: nothing to attach it to
        payload["output_index"] = ours_or_none
        return [self.event(kind, payload)]

    # -- the end ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The Response object with the open part's text materialised (for polls)."""
        part = self._part
        if part is not None and self._part_kind is not None:
            text = "".join(self._parts)
            if self._part_kind == "arguments":
                part["arguments"] = text
            elif self._part_kind == "refusal":
                part["refusal"] = text
            else:
                part["text"] = text
        return self.body

    def terminal(
        self,
        status: Status,
        *,
        error: dict[str, Any] | None = None,
        incomplete_reason: str | None = None,
    ) -> list[StoredEvent]:
        """Close any open item, settle the Response object and emit the terminal event."""
        out = self._close_item("completed" if status == Status.COMPLETED else "incomplete")
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


_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.function_call_arguments.delta",
    }
)
_PART_DONE = frozenset(
    {
        "response.output_text.done",
        "response.refusal.done",
        "response.reasoning_text.done",
        "response.reasoning_summary_text.done",
        "response.function_call_arguments.done",
    }
)
_MODELLED = {"message": "message", "reasoning": "reasoning", "function_call": "function_call"}


def replay(body: dict[str, Any], events: list[StoredEvent], seal: Sealer | None = None) -> ResponseBuilder:
    """A builder positioned after `events`, with `body.output` rebuilt from the log itself.

    Used when a response is settled by someone other than its lost worker: the stored
    snapshot may lag the log, so the output is recomputed from the events that were stored.
    """
    body = dict(body)
    body["output"] = []
    b = ResponseBuilder(body, events[-1].seq + 1 if events else 0, seal)
    for e in events:
        t = e.type
        if not t.startswith("response.") or t in ("response.created", "response.queued", "response.in_progress"):
            continue
        data = orjson.loads(e.data)
        if t == "response.output_item.added":
            item = data["item"]
            body["output"].append(item)
            kind = _MODELLED.get(item.get("type"))
            if kind is None:
                b._relayed[len(body["output"]) - 1] = len(body["output"]) - 1
                continue
            b._item, b._kind, b._item_index = item, kind, len(body["output"]) - 1
            if kind == "function_call":
                item["arguments"] = ""
                b._calls += 1
                b._part, b._part_kind, b._parts = item, "arguments", []
        elif t in ("response.content_part.added", "response.reasoning_summary_part.added") and b._item is not None:
            part = data["part"]
            if t == "response.reasoning_summary_part.added":
                b._item.setdefault("summary", []).append(part)
                b._part_index, b._part_kind = len(b._item["summary"]) - 1, "summary"
            else:
                b._item.setdefault("content", []).append(part)
                b._part_index, b._part_kind = len(b._item["content"]) - 1, str(part.get("type"))
            b._part, b._parts = part, []
        elif t in _DELTAS:
            b._parts.append(data["delta"])
            b._deltas += 1
            if "reasoning" in t:
                b._reasoning_deltas += 1
        elif t == "response.output_text.annotation.added" and b._part is not None:
            b._part.setdefault("annotations", []).append(data["annotation"])
        elif t in _PART_DONE:
            b.snapshot()
            b._part = b._part_kind = None
            b._parts = []
        elif t == "response.output_item.done":
            idx = data["output_index"]
            if 0 <= idx < len(body["output"]):
                body["output"][idx] = data["item"]
            if b._item is not None and idx == b._item_index:
                b._item = b._kind = b._part = b._part_kind = None
                b._parts = []
    return b
