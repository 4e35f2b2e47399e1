"""The builder's event log is enough to settle a response whose worker was lost: for every point
at which a log can be cut (after any committed event), `replay` rebuilds the same output the
live builder had, and the events it appends close every open part and item in spec order."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from bgmode.backends.base import (
    Annotation,
    BackendEvent,
    ItemEnd,
    Passthrough,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolArguments,
    ToolCall,
)
from bgmode.events import ResponseBuilder, replay
from bgmode.records import Status, StoredEvent

OUTPUT: list[BackendEvent] = [
    ReasoningDelta("Plan ", summary=True),
    ReasoningDelta("it.", summary=True),
    ReasoningDelta("Second part.", summary=True, part=1),
    ReasoningDelta("Thinking "),
    ReasoningDelta("hard."),
    TextDelta("Hello"),
    Annotation({"type": "url_citation", "url": "https://example.com", "title": "x", "start_index": 0, "end_index": 5}),
    TextDelta(" world"),
    RefusalDelta("No."),
    ToolCall("call_1", "get_weather"),
    ToolArguments('{"city":'),
    ToolArguments('"Paris"}'),
    ToolCall("call_2", "get_time"),
    ToolArguments("{}"),
    Passthrough(
        {
            "type": "response.output_item.added",
            "output_index": 7,
            "item": {"id": "ws_1", "type": "web_search_call", "status": "in_progress"},
        }
    ),
    Passthrough({"type": "response.web_search_call.searching", "output_index": 7, "item_id": "ws_1"}),
    Passthrough(
        {
            "type": "response.output_item.done",
            "output_index": 7,
            "item": {"id": "ws_1", "type": "web_search_call", "status": "completed"},
        }
    ),
    TextDelta("Done"),
    ItemEnd(),
    TextDelta("Another message"),
]


def body() -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": "in_progress", "output": [], "max_tool_calls": None}


def run_live(n: int) -> tuple[ResponseBuilder, list[StoredEvent]]:
    b = ResponseBuilder(body(), 0)
    events = [b.lifecycle(t) for t in ("response.created", "response.queued", "response.in_progress")]
    for ev in OUTPUT[:n]:
        events.extend(b.feed(ev))
    return b, events


def types(events: list[StoredEvent]) -> list[str]:
    return [e.type for e in events]


def test_live_event_order_follows_the_spec() -> None:
    _, events = run_live(len(OUTPUT))
    events = events[3:]
    t = types(events)
    assert t[:4] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
    ]
    assert "response.output_text.annotation.added" in t and "response.web_search_call.searching" in t
    seqs = [e.seq for e in events]
    assert seqs == list(range(3, 3 + len(events)))
    # every item-scoped event names an output index that was added before it
    added: set[int] = set()
    for e in events:
        data = orjson.loads(e.data)
        if e.type == "response.output_item.added":
            assert data["output_index"] == len(added)
            added.add(data["output_index"])
        elif "output_index" in data:
            assert data["output_index"] in added


@pytest.mark.parametrize("cut", range(len(OUTPUT) + 1))
def test_replay_after_any_cut_rebuilds_the_output(cut: int) -> None:
    live, events = run_live(cut)
    expected = copy.deepcopy(live)
    expected_tail = expected.terminal(Status.FAILED, error={"code": "server_error", "message": "lost"})
    rebuilt = replay(body(), events)
    tail = rebuilt.terminal(Status.FAILED, error={"code": "server_error", "message": "lost"})
    assert rebuilt.body["output"] == expected.body["output"]
    assert types(tail) == types(expected_tail)
    assert [e.seq for e in tail] == [e.seq for e in expected_tail]
    for item in rebuilt.body["output"]:
        if item["type"] in ("message", "reasoning", "function_call"):
            assert item["status"] in ("completed", "incomplete")
