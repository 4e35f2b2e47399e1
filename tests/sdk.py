"""Shared test helpers for reading responses and their event logs with the official SDK."""

from __future__ import annotations

from typing import Any

from openai import OpenAI

TERMINAL = {"completed", "failed", "cancelled", "incomplete"}
TERMINAL_TYPES = {"response.completed", "response.failed", "response.incomplete", "response.cancelled"}


def replay(client: OpenAI, rid: str, after: int | None = None) -> list[Any]:
    """Replay a response's events (after `after`), then follow them to the terminal event."""
    if after is None:
        stream = client.responses.retrieve(rid, stream=True)
    else:
        stream = client.responses.retrieve(rid, stream=True, starting_after=after)
    with stream as events:
        return list(events)


def deltas(events: list[Any]) -> str:
    """The text the `response.output_text.delta` events carry, joined."""
    return "".join(e.delta for e in events if getattr(e, "type", "") == "response.output_text.delta")


def seqs(events: list[Any]) -> list[int]:
    return [e.sequence_number for e in events]


def check_log(client: OpenAI, rid: str) -> tuple[str, list[Any]]:
    """Every log is 0..n without gaps or duplicates, ends with exactly one terminal event, and a
    completed response's output is the concatenation of its deltas. Returns (status, events)."""
    events = replay(client, rid)
    assert seqs(events) == list(range(len(events))), f"{rid}: {seqs(events)}"
    terminal = [e for e in events if getattr(e, "type", "") in TERMINAL_TYPES]
    assert len(terminal) == 1 and terminal[0] is events[-1]
    r = client.responses.retrieve(rid)
    assert r.status in TERMINAL
    if r.status == "completed":
        assert r.output_text == deltas(events)
    return r.status, events


def until_first_delta(client: OpenAI, metadata: dict[str, str], **create: Any) -> tuple[str, list[Any], Any]:
    """Create a background response with `stream=true` and read its events up to the first text
    delta (committed, so the response is running with output begun). Returns its id, the events
    read and the still-open stream."""
    stream = client.responses.create(model="m", background=True, stream=True, metadata=metadata, **create)
    seen: list[Any] = []
    for ev in stream:
        seen.append(ev)
        if ev.type == "response.output_text.delta":
            break
    return seen[0].response.id, seen, stream
