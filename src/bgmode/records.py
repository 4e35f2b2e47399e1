"""Internal records shared by the store, the worker and the service."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """A response's status; the values are exactly OpenAI's."""

    #: created, waiting for a worker
    QUEUED = "queued"
    #: a worker holds its lease and is generating
    IN_PROGRESS = "in_progress"
    #: the model finished
    COMPLETED = "completed"
    #: the model or the upstream failed, or the worker was lost after output began
    FAILED = "failed"
    #: cancelled by the client; final, never overwritten
    CANCELLED = "cancelled"
    #: stopped early (max_output_tokens, content filter)
    INCOMPLETE = "incomplete"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.INCOMPLETE})
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)


@dataclass(slots=True)
class ResponseRecord:
    """A stored response: the Response object plus what the server needs to run it."""

    id: str
    tenant: str
    status: str
    background: bool
    #: the Response object as a client sees it (output, usage, ... as of the last write)
    body: dict[str, Any]
    #: this response's input items (with ids), as listed by /input_items
    input_items: list[dict[str, Any]]
    #: the create request, as needed to run it (model context, knobs)
    request: dict[str, Any]
    created_at: float
    #: the last sequence number written to the event log (-1: none)
    last_seq: int = -1
    cancel_requested: bool = False
    lease_owner: str | None = None
    lease_expires: float | None = None
    #: how many times a worker has started it (requeues after a lost worker)
    attempts: int = 0
    #: the event log was deleted by retention (streaming it is a 400)
    events_purged: bool = False
    #: `body` already serialised (set on create, so the JSON is built once for the row,
    #: the first events and the reply)
    body_json: bytes | None = None
    #: the latest backend checkpoint token stored with the events it covers (resumable
    #: backends: `Backend.resume`); None for every other response
    resume: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of a response's log: its sequence number, type and its JSON, built once."""

    seq: int
    type: str
    data: bytes
