"""The one model-facing contract: a backend turns a `ModelRequest` into a stream of typed output.

The worker owns everything Responses-shaped (item ids, sequence numbers, the event log, the
Response object); a backend only says what the model produced. That keeps every backend
small: the simulator, an OpenAI-compatible Chat Completions upstream, or an upstream
`/v1/responses`.

**Input.** `ModelRequest.input` is the whole context as Responses input items, after
`previous_response_id` expansion (earlier turns' input and output items, then this
request's input), normalised by `protocol.py`:

- `{"type": "message", "role": "user"|"assistant"|"system"|"developer", "content": [part, ...]}`
  with parts `input_text{text}`, `output_text{text}`, `refusal{refusal}`,
  `input_image{image_url | file_id, detail}`, `input_file{file_data | file_url, filename}`;
- `{"type": "function_call", "call_id", "name", "arguments"}` (arguments: a JSON string);
- `{"type": "function_call_output", "call_id", "output": str | [parts]}`;
- `{"type": "reasoning", "summary": [...], "content": [...], "encrypted_content"?}`: bgmode's
  own `encrypted_content` is already opened into `summary`/`content`; an upstream's own token
  is kept as it came;
- any other output item type (hosted tool calls such as `web_search_call`), verbatim.

Each backend translates what it understands and skips the rest (`input_text` is a helper).

**Output.** `Backend.stream` yields, in the order the model produced them:

- `TextDelta` / `RefusalDelta`: the assistant message's text or refusal;
- `ReasoningDelta`: reasoning text (`summary=False`) or reasoning summary text
  (`summary=True`, `part` numbers summary parts); `ReasoningToken`: an upstream's own
  `encrypted_content` for the reasoning item being streamed;
- `ToolCall` then `ToolArguments*`: one function call (name, call_id, argument deltas);
- `Annotation`: an annotation on the text streamed so far (pass-through upstreams);
- `ItemEnd`: the current output item is over (the next delta starts a new item even if it
  is of the same kind);
- `Passthrough`: an upstream event of an item type bgmode does not model (hosted tool
  calls): relayed with bgmode's sequence numbers and output indexes;
- then at most one `Usage` and exactly one `Finish` as the last item.

A backend whose model server keeps the response itself (an upstream in background mode) also
yields `Checkpoint`s: everything yielded before a checkpoint is covered by its `token`. The
worker stores the latest token in the same write as the events it covers, and after a crash
or a restart continues with `Backend.resume(request, token)`, which yields only what comes
after; `Backend.cancel(token)` cancels the model server's response.

It raises `BackendError` for a failure (the response ends `failed` with that code and
message, keeping the output already streamed), and is cancelled by the worker
(`asyncio.CancelledError` at an `await`) when the response is cancelled or the worker shuts
down: it must release its upstream connection then, so the upstream sees the disconnect.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What the model is asked, after `previous_response_id` has been expanded."""

    #: the model name the client asked for
    model: str
    #: the full context as Responses input items (see the module docstring)
    input: list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    reasoning_effort: str | None = None
    #: `reasoning.summary` ("auto", "concise", "detailed") or None
    reasoning_summary: str | None = None
    verbosity: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: validated tool definitions: flat `function` tools, hosted tools as sent
    tools: list[dict[str, Any]] = field(default_factory=list)
    #: "none" | "auto" | "required" | {"type": "function", "name"} | {"type": "allowed_tools", ...}
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = None
    #: `text.format` when it is `json_schema` or `json_object` (None: plain text)
    text_format: dict[str, Any] | None = None
    #: the `include` values the client asked for
    include: list[str] = field(default_factory=list)
    #: the create request as the client sent it (for pass-through backends)
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def function_tools(self) -> list[dict[str, Any]]:
        return [t for t in self.tools if t.get("type") == "function"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class RefusalDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str
    #: True: reasoning summary text; False: the reasoning text itself
    summary: bool = False
    #: the summary part this text belongs to (a new number starts a new part)
    part: int = 0


@dataclass(frozen=True, slots=True)
class ReasoningToken:
    """An upstream's own `encrypted_content` for the reasoning item being streamed."""

    encrypted_content: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model calls a function: starts a `function_call` item; `ToolArguments` follow."""

    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArguments:
    """A piece of the open function call's arguments (a JSON string, streamed)."""

    delta: str


@dataclass(frozen=True, slots=True)
class Annotation:
    """An annotation (url_citation, file_citation, ...) on the output text streamed so far."""

    annotation: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ItemEnd:
    """The current output item is complete."""


@dataclass(frozen=True, slots=True)
class Passthrough:
    """An upstream Responses event for an item bgmode does not model, relayed as it is.

    `output_item.added` / `.done` carry the whole item; other events refer to it with the
    upstream's `output_index`, which bgmode maps to its own.
    """

    event: dict[str, Any]


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


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What was yielded before this can be resumed after with `Backend.resume(request, token)`.

    `token` is small JSON (the upstream response id, its cursor, a little parse state)."""

    token: dict[str, Any]


BackendEvent = (
    TextDelta
    | RefusalDelta
    | ReasoningDelta
    | ReasoningToken
    | ToolCall
    | ToolArguments
    | Annotation
    | ItemEnd
    | Passthrough
    | Usage
    | Finish
    | Checkpoint
)


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

    async def count_input_tokens(self, request: ModelRequest) -> int:
        """How many tokens the request's input is (`POST /v1/responses/input_tokens`): an
        estimate unless the backend can ask the model server."""
        return estimate_input_tokens(request)

    def resume(self, request: ModelRequest, token: dict[str, Any]) -> AsyncIterator[BackendEvent]:
        """Continue a response after the `Checkpoint` whose token is `token`, in a new process
        if need be. Only backends that yield checkpoints implement it."""
        raise NotImplementedError(f"{type(self).__name__} yields no checkpoints")

    async def cancel(self, token: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Cancel the model server's own response named by a checkpoint's `token` (best effort)."""

    def check(self, metadata: dict[str, str]) -> None:  # noqa: B027 - optional hook
        """Refuse, at create time, request `metadata` this backend reads and cannot use: raise
        `ValueError(param, message)`; the client gets a 400 naming `param`."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once at shutdown."""


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for backends that report none."""
    return max(1, (len(text) + 3) // 4) if text else 0


def user_message(text: str, role: str = "user") -> dict[str, Any]:
    """A normalised message input item with one text part."""
    part = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


def part_text(part: dict[str, Any]) -> str:
    """The text of a content part (text, refusal, summary or reasoning), or ""."""
    t = part.get("text")
    if isinstance(t, str):
        return t
    r = part.get("refusal")
    return r if isinstance(r, str) else ""


def item_text(item: dict[str, Any]) -> str:
    """The plain text an input item carries (for token estimates and simple models)."""
    kind = item.get("type")
    if kind == "message":
        content = item.get("content")
        if isinstance(content, str):
            return content
        return "".join(part_text(p) for p in content or () if isinstance(p, dict))
    if kind == "function_call":
        return f"{item.get('name', '')}({item.get('arguments', '')})"
    if kind == "function_call_output":
        out = item.get("output")
        if isinstance(out, str):
            return out
        return "".join(part_text(p) for p in out or () if isinstance(p, dict))
    if kind == "reasoning":
        parts = [*(item.get("summary") or ()), *(item.get("content") or ())]
        return "".join(part_text(p) for p in parts if isinstance(p, dict))
    return ""


def input_text(items: Iterable[dict[str, Any]]) -> str:
    """All the text of a context, joined (for token estimates)."""
    return "\n".join(item_text(it) for it in items)


def estimate_input_tokens(request: ModelRequest) -> int:
    """An estimate of the prompt's tokens: the context's text plus the instructions."""
    return sum(estimate_tokens(item_text(it)) for it in request.input) + estimate_tokens(request.instructions or "")
