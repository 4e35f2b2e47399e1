"""The `chat` backend: any OpenAI-compatible Chat Completions endpoint (Ollama, vLLM,
llama.cpp, LM Studio, TGI, OpenAI...), streamed.

Request translation (`ModelRequest` → `POST {base_url}/chat/completions`):

- `instructions` → a leading `system` message; `developer` turns → `system` (few servers
  other than OpenAI know the `developer` role);
- `max_output_tokens` → `max_tokens` (or `max_completion_tokens`, which OpenAI's reasoning
  models require: `ChatOptions.max_tokens_param`);
- `temperature`, `top_p` as they are; `reasoning.effort` → `reasoning_effort` (unless turned
  off); `text.verbosity` → `verbosity` only when turned on (OpenAI-only parameter);
- `stream_options.include_usage` so that the upstream reports usage at the end.

`metadata` is not forwarded: it describes the bgmode response, not the model call.

Stream translation: `delta.content` (and `delta.refusal`) → `TextDelta`,
`delta.reasoning_content` / `delta.reasoning` → `ReasoningDelta`, the usage chunk → `Usage`
(estimated when the upstream reports none), `finish_reason` "length" → incomplete
(`max_output_tokens`), "content_filter" → incomplete (`content_filter`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from bgmode.backends.base import (
    BackendEvent,
    Finish,
    ModelRequest,
    ReasoningDelta,
    TextDelta,
    Usage,
)
from bgmode.backends.http import (
    HTTPBackend,
    Progress,
    SSEEvent,
    UpstreamFailure,
    UpstreamSettings,
    event_json,
)

_FINISH: dict[str, Finish] = {
    "length": Finish("max_output_tokens"),
    "content_filter": Finish("content_filter"),
}


@dataclass(frozen=True)
class ChatOptions:
    """Which optional Chat Completions parameters the upstream understands."""

    #: "max_tokens" works almost everywhere; OpenAI's reasoning models want "max_completion_tokens"
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    #: send `reasoning_effort` when the client sets `reasoning.effort`
    send_reasoning_effort: bool = True
    #: send `verbosity` when the client sets `text.verbosity` (OpenAI only)
    send_verbosity: bool = False
    #: ask for a usage chunk (`stream_options.include_usage`); turn off for servers that reject it
    stream_usage: bool = True


class ChatBackend(HTTPBackend):
    """Streams from an OpenAI-compatible `/chat/completions` endpoint."""

    kind = "chat"
    path = "/chat/completions"

    def __init__(self, settings: UpstreamSettings, options: ChatOptions | None = None) -> None:
        super().__init__(settings)
        self.options = options or ChatOptions()

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.instructions:
            messages.append({"role": "system", "content": request.instructions})
        for m in request.messages:
            role = "system" if m.role == "developer" else m.role
            messages.append({"role": role, "content": m.text})
        body: dict[str, Any] = {"model": self.model_for(request), "messages": messages, "stream": True}
        if self.options.stream_usage:
            body["stream_options"] = {"include_usage": True}
        if request.max_output_tokens is not None:
            body[self.options.max_tokens_param] = request.max_output_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.reasoning_effort and self.options.send_reasoning_effort:
            body["reasoning_effort"] = request.reasoning_effort
        if request.verbosity and self.options.send_verbosity:
            body["verbosity"] = request.verbosity
        return body

    async def parse(
        self, events: AsyncIterator[SSEEvent], request: ModelRequest, progress: Progress
    ) -> AsyncIterator[BackendEvent]:
        usage: Usage | None = None
        finish: Finish | None = None
        done = False
        async for event in events:
            if event.data.strip() == "[DONE]":
                done = True
                break
            chunk = event_json(event)
            if not isinstance(chunk, dict):
                continue
            if chunk.get("error"):
                # vLLM and OpenAI report a failure mid-stream as an error chunk.
                raise UpstreamFailure(f"upstream error: {_error_text(chunk['error'])}")
            if isinstance(chunk.get("usage"), dict):
                usage = chat_usage(chunk["usage"])
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    yield ReasoningDelta(reasoning)
                for key in ("content", "refusal"):
                    text = delta.get(key)
                    if isinstance(text, str) and text:
                        yield TextDelta(text)
                reason = choice.get("finish_reason")
                if reason:
                    finish = _FINISH.get(reason, Finish())
        if not done and finish is None:
            raise UpstreamFailure("upstream closed the stream before the model finished", retryable=True, broke=True)
        yield usage or progress.estimated_usage(request)
        yield finish or Finish()


def chat_usage(raw: dict[str, Any]) -> Usage:
    """`Usage` from a Chat Completions `usage` object (missing details count as 0)."""
    completion_details = raw.get("completion_tokens_details") or {}
    prompt_details = raw.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
        cached_tokens=int(prompt_details.get("cached_tokens") or 0),
    )


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
