"""The one model-facing contract: a backend turns a `ModelRequest` into a stream of deltas.

The worker owns everything Responses-shaped (items, ids, sequence numbers, the event log);
a backend only says what the model produced. That keeps every backend small: the
simulator, an OpenAI-compatible Chat Completions upstream, or an upstream `/v1/responses`.

Contract for `Backend.stream`:

- yields `TextDelta` / `ReasoningDelta` in the order the model produced them, then at most
  one `Usage` and exactly one `Finish` as the last item;
- raises `BackendError` for a failure (the response ends `failed` with that code and
  message, keeping the output already streamed);
- is cancelled by the worker (`asyncio.CancelledError` at an `await`) when the response is
  cancelled or the worker shuts down: it must release its upstream connection then, so the
  upstream sees the disconnect.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation, flattened to text."""

    role: Literal["system", "developer", "user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What the model is asked, after `previous_response_id` has been expanded."""

    #: the model name the client asked for
    model: str
    #: the full context: earlier turns (from previous responses) then this request's input
    messages: list[Message]
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: the create request as the client sent it (for pass-through backends)
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Finish:
    """The model stopped. `reason` None is a normal stop; otherwise the response is incomplete."""

    reason: Literal["max_output_tokens", "content_filter"] | None = None


BackendEvent = TextDelta | ReasoningDelta | Usage | Finish


class BackendError(Exception):
    """The model call failed; the response ends `failed` with `code` and `message`."""

    def __init__(self, message: str, code: str = "server_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Backend(ABC):
    """A model server, or the simulator."""

    #: how many responses this backend may run at once (None: no limit of its own)
    max_concurrency: int | None = None

    @abstractmethod
    def stream(self, request: ModelRequest) -> AsyncIterator[BackendEvent]:
        """Run the model and yield what it produces (see the module docstring)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once at shutdown."""


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for backends that report none."""
    return max(1, (len(text) + 3) // 4) if text else 0
