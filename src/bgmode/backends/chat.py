"""The `chat` backend: any OpenAI-compatible Chat Completions endpoint (Ollama, vLLM,
llama.cpp, LM Studio, TGI, OpenAI...), streamed.

Request translation (`ModelRequest` → `POST {base_url}/chat/completions`):

- `instructions` → a leading `system` message; `developer` turns → `system` (few servers
  other than OpenAI know the `developer` role);
- message items → messages: text parts as text (one string when a message is text only),
  `input_image` → `image_url` parts (`detail` `original`, which Chat lacks, → `auto`),
  `input_file` → `file` parts (`file_data`, or `file_url` as `file_id`; `filename`). Whether
  files may be sent is decided at create time (`ChatOptions.accept_files`);
- consecutive `function_call` items → one assistant message with `tool_calls` (joined to the
  assistant message just before them); `function_call_output` → a `tool` message (a list
  output: its text joined, or text and `image_url` parts when it has images);
- `reasoning` items are not sent: Chat Completions has no standard field for them (vLLM's
  `reasoning` and DeepSeek's `reasoning_content` on assistant messages are each one server's
  extension, and DeepSeek rejects the field it does not know); hosted-tool items are not
  sent either (a `chat` route refuses hosted tools at create time);
- `tools` (function tools) → `{"type": "function", "function": {...}}`; `tool_choice`
  (`{"type": "function", "name"}` → `{"type": "function", "function": {"name"}}`,
  `allowed_tools` → `{"type": "allowed_tools", "allowed_tools": {"mode", "tools"}}`) and
  `parallel_tool_calls` only with tools; `text.format` → `response_format` (`json_schema`
  nested under `json_schema`, `json_object` as it is);
- `max_output_tokens` → `max_tokens` (or `max_completion_tokens`, which OpenAI's reasoning
  models require: `ChatOptions.max_tokens_param`); `temperature`, `top_p` as they are;
  `reasoning.effort` → `reasoning_effort` (unless turned off); `text.verbosity` → `verbosity`
  only when turned on (OpenAI-only parameter);
- `stream_options.include_usage` so that the upstream reports usage at the end.

`metadata` is not forwarded: it describes the bgmode response, not the model call.

Stream translation: `delta.content` → `TextDelta`, `delta.refusal` → `RefusalDelta`,
`delta.reasoning_content` / `delta.reasoning` → `ReasoningDelta`, `delta.tool_calls[]` (by
`index`: the first chunk of a call has its `id` and `function.name`, later ones pieces of
`function.arguments`) → `ToolCall` (with a minted `call_…` id when the upstream sends none)
+ `ToolArguments`. The first call streams live; a later one is held and released whole, in
index order, when the stream ends (or fails), because until then an earlier call may still
receive pieces (servers may interleave calls by index) and each call's events must be
contiguous. The usage chunk → `Usage` (estimated when the upstream reports none);
`finish_reason` "stop" / "tool_calls" → a normal finish, "length" → incomplete
(`max_output_tokens`), "content_filter" → incomplete (`content_filter`). A tool-call chunk
that makes no sense (not an object, no index, arguments for a call that never got a name, a
call that never gets one) is a failure that keeps the output streamed so far.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from bgmode.backends.base import (
    BackendEvent,
    Finish,
    ModelRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolArguments,
    ToolCall,
    Usage,
    part_text,
)
from bgmode.backends.http import (
    HTTPBackend,
    Progress,
    SSEEvent,
    UpstreamFailure,
    UpstreamSettings,
    event_json,
)

_STOP = Finish()
#: finish reasons that make the response incomplete ("stop", "tool_calls" and any other: a normal stop)
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
    #: the upstream accepts `file` content parts (`input_file`); otherwise files are a 400 at create
    accept_files: bool = False


_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})
_CHAT_DETAILS = frozenset({"low", "high", "auto"})


def _content(parts: list[Any]) -> str | list[dict[str, Any]]:
    """Chat content for Responses content parts: a string when it is all text."""
    parts = [p for p in parts if isinstance(p, dict)]
    if all(p.get("type") in _TEXT_PARTS for p in parts):
        return "".join(part_text(p) for p in parts)
    out: list[dict[str, Any]] = []
    for p in parts:
        kind = p.get("type")
        if kind in _TEXT_PARTS:
            out.append({"type": "text", "text": part_text(p)})
        elif kind == "input_image":
            detail = p.get("detail")
            url = {"url": p.get("image_url") or "", "detail": detail if detail in _CHAT_DETAILS else "auto"}
            out.append({"type": "image_url", "image_url": url})
        elif kind == "input_file":
            file: dict[str, Any] = {}
            if p.get("file_data"):
                file["file_data"] = p["file_data"]
            elif p.get("file_url") or p.get("file_id"):
                file["file_id"] = p.get("file_url") or p.get("file_id")
            if p.get("filename"):
                file["filename"] = p["filename"]
            out.append({"type": "file", "file": file})
        # any other part type has no Chat equivalent
    return out


def chat_messages(request: ModelRequest) -> list[dict[str, Any]]:
    """The Chat Completions `messages` for a request's instructions and input items."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    for it in request.input:
        kind = it.get("type", "message")
        if kind == "message":
            role = it.get("role", "user")
            content = it.get("content")
            text = content if isinstance(content, str) else _content(list(content or ()))
            messages.append({"role": "system" if role == "developer" else role, "content": text})
        elif kind == "function_call":
            call = {
                "id": it.get("call_id"),
                "type": "function",
                "function": {"name": it.get("name"), "arguments": it.get("arguments") or ""},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if last.get("content") in ("", []):
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out = it.get("output")
            content = out if isinstance(out, str) else _content(list(out or ()))
            messages.append({"role": "tool", "tool_call_id": it.get("call_id"), "content": content})
        # reasoning and hosted-tool items: Chat Completions has no standard place for them
    return messages


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat Responses function tools → Chat's nested `{"type": "function", "function": {...}}`."""
    out = []
    for t in tools:
        fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if t.get(k) is not None}
        out.append({"type": "function", "function": fn})
    return out


def chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    """A Responses `tool_choice` as Chat Completions spells it."""
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("type") == "allowed_tools":
        tools = [
            {"type": "function", "function": {"name": t.get("name")}}
            for t in choice.get("tools") or ()
            if isinstance(t, dict) and t.get("type") == "function"
        ]
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": tools}}
    return "auto"


def response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    """A Responses `text.format` as Chat's `response_format` (None for plain text)."""
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = {"name": fmt.get("name") or "response_schema", "schema": fmt.get("schema") or {}}
        schema["strict"] = bool(fmt.get("strict"))
        if fmt.get("description"):
            schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


@dataclass
class _Call:
    call_id: str | None
    name: str | None = None
    args: list[str] = field(default_factory=list)


def _malformed(what: str, chunk: Any) -> UpstreamFailure:
    return UpstreamFailure(f"upstream sent a malformed tool call ({what}): {str(chunk)[:200]!r}")


class _ToolCalls:
    """Streamed `tool_calls` deltas by index → each call's `ToolCall` + `ToolArguments`.

    The first call streams live. Later calls are held and released whole, in index order, when
    the stream ends: until then the first call may still receive pieces (servers may interleave
    calls by index), and its item must stay open for them."""

    def __init__(self) -> None:
        self.calls: dict[int, _Call] = {}
        self.live: int | None = None

    def feed(self, chunk: Any) -> Iterator[BackendEvent]:
        if not isinstance(chunk, dict):
            raise _malformed("not an object", chunk)
        index = chunk.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise _malformed("no index", chunk)
        fn = chunk.get("function")
        if fn is None:
            fn = {}
        elif not isinstance(fn, dict):
            raise _malformed("function is not an object", chunk)
        call = self.calls.get(index)
        if call is None:
            call_id = chunk.get("id")
            call = self.calls[index] = _Call(call_id if isinstance(call_id, str) and call_id else None)
        if call.name is None:
            name = fn.get("name")
            if isinstance(name, str) and name:
                call.name = name
                if call.call_id is None:
                    call.call_id = "call_" + os.urandom(12).hex()
                if self.live is None:
                    self.live = index
                    yield ToolCall(call.call_id, name)
            elif fn.get("arguments"):
                raise UpstreamFailure(f"upstream sent arguments for tool call {index}, which has no name")
            else:
                return  # an id (or nothing) before the name: wait for it
        piece = fn.get("arguments")
        if isinstance(piece, str) and piece:
            if index == self.live:
                yield ToolArguments(piece)
            else:
                call.args.append(piece)

    def finish(self) -> Iterator[BackendEvent]:
        """The held calls, whole, in index order."""
        for index in sorted(self.calls):
            call = self.calls[index]
            if index == self.live or call.name is None or call.call_id is None:
                continue
            yield ToolCall(call.call_id, call.name)
            if call.args:
                yield ToolArguments("".join(call.args))

    def check(self) -> None:
        for index, call in self.calls.items():
            if call.name is None:
                raise UpstreamFailure(f"upstream sent tool call {index} without a name")


class ChatBackend(HTTPBackend):
    """Streams from an OpenAI-compatible `/chat/completions` endpoint."""

    kind = "chat"
    path = "/chat/completions"

    def __init__(self, settings: UpstreamSettings, options: ChatOptions | None = None) -> None:
        super().__init__(settings)
        self.options = options or ChatOptions()

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_for(request), "messages": chat_messages(request), "stream": True}
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
        tools = request.function_tools
        if tools:  # tool_choice and parallel_tool_calls without tools are a 400 on OpenAI
            body["tools"] = chat_tools(tools)
            body["tool_choice"] = chat_tool_choice(request.tool_choice)
            body["parallel_tool_calls"] = request.parallel_tool_calls
        if request.text_format:
            fmt = response_format(request.text_format)
            if fmt is not None:
                body["response_format"] = fmt
        return body

    async def parse(
        self, events: AsyncIterator[SSEEvent], request: ModelRequest, progress: Progress
    ) -> AsyncIterator[BackendEvent]:
        calls = _ToolCalls()
        try:
            async for ev in self._parse(events, request, progress, calls):
                yield ev
        except UpstreamFailure:
            # Keep what the model said: the held calls were streamed, only not yet released.
            for ev in calls.finish():
                yield ev
            raise

    async def _parse(
        self, events: AsyncIterator[SSEEvent], request: ModelRequest, progress: Progress, calls: _ToolCalls
    ) -> AsyncIterator[BackendEvent]:
        usage: Usage | None = None
        finish: Finish | None = None
        done = False
        async for event in events:
            data = event.data
            if not data.startswith("{") and data.strip() == "[DONE]":
                done = True
                break
            chunk = event_json(event)
            if not isinstance(chunk, dict):
                continue
            choices = chunk.get("choices")
            if choices:
                for choice in choices:
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta")
                    if delta:
                        text = delta.get("content")
                        if text and isinstance(text, str):  # the common case: one token of text
                            yield TextDelta(text)
                            if len(delta) == 1:
                                if choice.get("finish_reason"):
                                    finish = _FINISH.get(choice["finish_reason"], _STOP)
                                continue
                        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                        if reasoning and isinstance(reasoning, str):
                            yield ReasoningDelta(reasoning)
                        refusal = delta.get("refusal")
                        if refusal and isinstance(refusal, str):
                            yield RefusalDelta(refusal)
                        tool_calls = delta.get("tool_calls")
                        if tool_calls is not None:
                            if not isinstance(tool_calls, list):
                                raise _malformed("tool_calls is not a list", tool_calls)
                            for tc in tool_calls:
                                for ev in calls.feed(tc):
                                    yield ev
                    reason = choice.get("finish_reason")
                    if reason:
                        finish = _FINISH.get(reason, _STOP)
            elif chunk.get("error"):
                # vLLM and OpenAI report a failure mid-stream as an error chunk.
                raise UpstreamFailure(f"upstream error: {_error_text(chunk['error'])}")
            raw_usage = chunk.get("usage")
            if raw_usage and isinstance(raw_usage, dict):
                usage = chat_usage(raw_usage)
        if not done and finish is None:
            raise UpstreamFailure("upstream closed the stream before the model finished", retryable=True, broke=True)
        calls.check()
        for ev in calls.finish():
            yield ev
        calls.calls.clear()
        yield usage or progress.estimated_usage(request)
        yield finish or _STOP


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
