"""The `responses` backend: any upstream `/v1/responses` (OpenAI, vLLM, another bgmode).

The upstream is asked statelessly: the whole expanded context goes as `input` items (never a
`previous_response_id`, which would only exist in bgmode's own store), with `stream: true`
and `store: false`. Items go as they are (messages with their parts, `function_call`,
`function_call_output`, hosted-tool items); a `reasoning` item that carries the upstream's own
`encrypted_content` goes as it came (id included: the upstream made both), any other (one
bgmode made and opened, or whose token was dropped) as its summary and text only, without an
id the upstream never saw. `instructions`, `max_output_tokens`, `temperature`, `top_p`,
`reasoning.effort` and `text.verbosity` are sent when set; so are `tools` (hosted ones too),
`tool_choice`, `parallel_tool_calls`, `max_tool_calls`, `include`, and a few fields of the
client's own request that change only how the output is produced (`reasoning.summary`,
`text.format` (json_schema, json_object),
`truncation`, `service_tier`, `user`, `safety_identifier`, `prompt_cache_key`).

Upstream events become typed output, and the worker re-sequences them into bgmode's own log:
`output_text.delta` → `TextDelta`; `refusal.delta` → `RefusalDelta`; `reasoning_text.delta`
→ `ReasoningDelta`; `reasoning_summary_text.delta` → `ReasoningDelta(summary=True, part=i)`;
a reasoning item's final `encrypted_content` → `ReasoningToken`; a `function_call` item →
`ToolCall` + `ToolArguments` (from its argument deltas, or its final arguments when none were
streamed); `output_text.annotation.added` → `Annotation`; the end of any of those items →
`ItemEnd`; every event of any other item type (`web_search_call`, `mcp_call`, ...) →
`Passthrough`; the terminal `response.completed` / `response.incomplete` → `Usage` then
`Finish`; `response.failed` and `error` events → a failure with the upstream's message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from bgmode import metrics
from bgmode.backends.base import (
    Annotation,
    BackendError,
    BackendEvent,
    Checkpoint,
    Finish,
    ItemEnd,
    ModelRequest,
    Passthrough,
    ReasoningDelta,
    ReasoningToken,
    RefusalDelta,
    TextDelta,
    ToolArguments,
    ToolCall,
    Usage,
)
from bgmode.backends.http import (
    HTTPBackend,
    Progress,
    SSEEvent,
    UpstreamFailure,
    UpstreamSettings,
    _read_capped,
    error_message,
    event_json,
    iter_sse,
)

log = logging.getLogger("bgmode.upstream")

#: client request fields passed upstream as they are (they shape the output, not the job)
PASS_THROUGH = (
    "truncation",
    "service_tier",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "top_logprobs",
)

#: `error.code` values of a Response; any other upstream code is reported as `server_error`
RESPONSE_ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)


class ResponsesBackend(HTTPBackend):
    """Streams from an upstream `/responses` endpoint."""

    kind = "responses"
    path = "/responses"

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        send_reasoning_effort: bool = True,
        send_verbosity: bool = True,
        background: bool = False,
    ) -> None:
        super().__init__(settings)
        #: upstreams that refuse these parameters for some models (gateways in front of them)
        self.send_reasoning_effort = send_reasoning_effort
        self.send_verbosity = send_verbosity
        #: run upstream in background mode (stored there) and yield checkpoints to resume from
        self.background = background

    async def stream(self, request: ModelRequest) -> AsyncIterator[BackendEvent]:
        if not self.background:
            async for event in super().stream(request):
                yield event
            return
        async for event in self._relay(request, None):
            yield event

    def resume(self, request: ModelRequest, token: dict[str, Any]) -> AsyncIterator[BackendEvent]:
        return self._relay(request, token)

    async def cancel(self, token: dict[str, Any]) -> None:
        """`POST /responses/{id}/cancel` upstream; failures are logged, never raised."""
        try:
            async with self._http().post(
                f"{self.url}/{quote(str(token['id']), safe='')}/cancel",
                headers=self._headers(),
                proxy=self._proxy,
                timeout=aiohttp.ClientTimeout(total=self.settings.connect_timeout + 10),
            ) as response:
                if response.status >= 300 and response.status != 400:  # 400: it had already finished
                    log.warning("%s: cancelling upstream response: HTTP %d", self.where, response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("%s: cancelling upstream response failed: %s", self.where, type(exc).__name__)

    async def _relay(self, request: ModelRequest, token: dict[str, Any] | None) -> AsyncIterator[BackendEvent]:
        """Background mode: create the upstream response (or, with a `token`, reattach to it),
        follow its stream, and after a break follow it again with `starting_after` the last
        event handled, so nothing is lost or repeated. A `Checkpoint` follows every upstream
        event that produced output."""
        body = orjson.dumps(self.build_body(request)) if token is None else b""
        async with self.slot():
            progress = Progress()
            parser = _Parser(request, progress, token)
            attempt = 0
            while True:
                seen = parser.seq
                try:
                    if parser.upstream_id is None:
                        connect = self._http().post(self.url, data=body, headers=self._headers(), proxy=self._proxy)
                    else:
                        connect = self._http().get(
                            f"{self.url}/{quote(parser.upstream_id, safe='')}",
                            params={"stream": "true", "starting_after": str(parser.seq)},
                            headers=self._headers(),
                            proxy=self._proxy,
                        )
                    async with connect as response:
                        if not 200 <= response.status < 300:
                            raise await self._status_failure(response)
                        if response.headers.get("content-type", "").startswith("application/json"):
                            detail = error_message(await _read_capped(response))
                            raise UpstreamFailure(
                                f"upstream {self.where} answered with JSON, not an event stream: {detail}"
                            )
                        async for event in iter_sse(response.content.iter_any()):
                            if not event.data.startswith("{") and event.data.strip() == "[DONE]":
                                break
                            data = event_json(event)
                            if not isinstance(data, dict):
                                continue
                            known = parser.upstream_id
                            outs = parser.feed(data, event.event)
                            for out in outs:
                                progress.count(out)
                                yield out
                            if parser.done:
                                return
                            if outs or known != parser.upstream_id:
                                checkpoint = parser.token()
                                if checkpoint is not None:
                                    yield Checkpoint(checkpoint)
                    raise UpstreamFailure(
                        "upstream closed the stream before the response finished", retryable=True, broke=True
                    )
                except UpstreamFailure as exc:
                    failure = exc
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failure = self._transport_failure(exc, progress)
                metrics.upstream_error(self.where, failure.kind)
                message = failure.message
                if parser.upstream_id is None and progress.deltas:
                    raise BackendError(self._redact(message), failure.code)  # nothing to reattach to
                if parser.seq > seen:
                    attempt = 0  # it moved on since the last break: a fresh budget
                attempt = await self._wait_to_retry(
                    failure, message, attempt, "retry" if parser.upstream_id is None else "reattach"
                )

    async def count_input_tokens(self, request: ModelRequest) -> int:
        """The upstream's own count (`POST {base_url}/responses/input_tokens`), else an estimate."""
        body = {k: v for k, v in self.build_body(request).items() if k not in ("stream", "store", "include")}
        try:
            async with self._http().post(
                self.url + "/input_tokens", data=orjson.dumps(body), headers=self._headers(), proxy=self._proxy
            ) as response:
                if response.status == 200:
                    count = (await response.json()).get("input_tokens")
                    if isinstance(count, int) and not isinstance(count, bool):
                        return count
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        return await super().count_input_tokens(request)

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_for(request),
            "input": [out for it in request.input if (out := _upstream_item(it)) is not None],
            "stream": True,
            "store": self.background,
        }
        if self.background:
            # stored upstream (that is what makes it resumable): the client's metadata goes too
            body["background"] = True
            if request.metadata:
                body["metadata"] = request.metadata
        if request.instructions:
            body["instructions"] = request.instructions
        if request.max_output_tokens is not None:
            body["max_output_tokens"] = request.max_output_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        reasoning = _subset(request.body.get("reasoning"), ("summary",))
        if request.reasoning_effort and self.send_reasoning_effort:
            reasoning["effort"] = request.reasoning_effort
        if reasoning:
            body["reasoning"] = reasoning
        text = _subset(request.body.get("text"), ("format",))
        if request.text_format:
            text["format"] = request.text_format
        if request.verbosity and self.send_verbosity:
            text["verbosity"] = request.verbosity
        if text:
            body["text"] = text
        for key in PASS_THROUGH:
            if request.body.get(key) is not None:
                body[key] = request.body[key]
        if request.tools:
            body["tools"] = request.tools
            body["tool_choice"] = request.tool_choice
            body["parallel_tool_calls"] = request.parallel_tool_calls
        elif request.tool_choice != "auto":
            body["tool_choice"] = request.tool_choice
        if request.max_tool_calls is not None:
            body["max_tool_calls"] = request.max_tool_calls
        if request.include:
            body["include"] = request.include
        return body

    async def parse(
        self, events: AsyncIterator[SSEEvent], request: ModelRequest, progress: Progress
    ) -> AsyncIterator[BackendEvent]:
        parser = _Parser(request, progress)
        async for event in events:
            if not event.data.startswith("{") and event.data.strip() == "[DONE]":
                break  # not part of the Responses protocol, but some servers add it
            data = event_json(event)
            if not isinstance(data, dict):
                continue
            for out in parser.feed(data, event.event):
                yield out
            if parser.done:
                return
        raise UpstreamFailure("upstream closed the stream before the response finished", retryable=True, broke=True)


class _Parser:
    """Upstream Responses events in, backend events out; its state fits in a checkpoint."""

    __slots__ = ("args", "done", "kinds", "progress", "request", "seq", "upstream_id")

    def __init__(self, request: ModelRequest, progress: Progress, token: dict[str, Any] | None = None) -> None:
        self.request = request
        self.progress = progress
        #: upstream item kinds by output_index
        self.kinds: dict[str, str] = dict((token or {}).get("kinds") or {})
        #: argument text streamed so far, by the output_index of its function call
        self.args: dict[str, str] = {}
        for idx, n in ((token or {}).get("args") or {}).items():
            self.args[idx] = "\0" * int(n)  # only its length is kept across a resume
        #: the upstream response's id and the last sequence number handled
        self.upstream_id: str | None = (token or {}).get("id")
        self.seq: int = int((token or {}).get("after", -1))
        self.done = False

    def token(self) -> dict[str, Any] | None:
        """The checkpoint after the events handled so far (None until the upstream id is known)."""
        if self.upstream_id is None:
            return None
        return {
            "id": self.upstream_id,
            "after": self.seq,
            "kinds": self.kinds,
            "args": {idx: len(text) for idx, text in self.args.items()},
        }

    def feed(self, data: dict[str, Any], name: str = "message") -> list[BackendEvent]:
        seq = data.get("sequence_number")
        if isinstance(seq, int) and not isinstance(seq, bool):
            self.seq = seq
        kind = data.get("type") or name
        delta = data.get("delta")
        if kind == "response.output_text.delta":
            return [TextDelta(delta)] if isinstance(delta, str) and delta else []
        idx = str(data.get("output_index"))
        if kind == "response.function_call_arguments.delta":
            if not isinstance(delta, str) or not delta:
                return []
            self.args[idx] = self.args.get(idx, "") + delta
            return [ToolArguments(delta)]
        if kind == "response.refusal.delta":
            return [RefusalDelta(delta)] if isinstance(delta, str) and delta else []
        if kind == "response.reasoning_text.delta":
            return [ReasoningDelta(delta)] if isinstance(delta, str) and delta else []
        if kind == "response.reasoning_summary_text.delta":
            if not isinstance(delta, str) or not delta:
                return []
            part = data.get("summary_index")
            return [ReasoningDelta(delta, summary=True, part=part if isinstance(part, int) else 0)]
        if kind == "response.output_text.annotation.added":
            return [Annotation(data["annotation"])] if isinstance(data.get("annotation"), dict) else []
        if kind in ("response.output_item.added", "response.output_item.done"):
            return self._item(kind, data, idx)
        if self.kinds.get(idx, "message") not in _MODELLED and kind.startswith("response."):
            return [Passthrough(data)]  # an event of a relayed (hosted-tool) item
        if kind in ("response.created", "response.in_progress", "response.queued"):
            rid = (data.get("response") or {}).get("id")
            if isinstance(rid, str) and rid:
                self.upstream_id = rid
            return []
        if kind in ("response.completed", "response.incomplete"):
            self.done = True
            response = data.get("response") or {}
            usage = response.get("usage")
            used = responses_usage(usage) if isinstance(usage, dict) else self.progress.estimated_usage(self.request)
            if kind == "response.completed":
                return [used, Finish()]
            reason = (response.get("incomplete_details") or {}).get("reason")
            # Finish knows two reasons; any other cut-off (max_messages...) is a length limit.
            return [used, Finish("content_filter" if reason == "content_filter" else "max_output_tokens")]
        if kind == "response.failed":
            response = data.get("response") or {}
            if response.get("status") == "cancelled":
                raise UpstreamFailure("the upstream response was cancelled")
            error = response.get("error") or {}
            raise UpstreamFailure(
                f"upstream response failed: {error.get('message') or 'no message'}", _code(error.get("code"))
            )
        if kind == "response.cancelled":  # what bgmode upstreams before 0.2 sent
            raise UpstreamFailure("the upstream response was cancelled")
        if kind == "error":
            # The spec's flat {code, message} and the nested {error: {...}} seen in real traffic.
            nested = data.get("error")
            flat: dict[str, Any] = nested if isinstance(nested, dict) else data
            raise UpstreamFailure(f"upstream error: {flat.get('message') or 'no message'}", _code(flat.get("code")))
        return []

    def _item(self, kind: str, data: dict[str, Any], idx: str) -> list[BackendEvent]:
        raw_item = data.get("item")
        item: dict[str, Any] = raw_item if isinstance(raw_item, dict) else {}
        item_type = str(item.get("type"))
        if data.get("output_index") is not None:
            self.kinds.setdefault(idx, item_type)
        if item_type not in _MODELLED:
            return [Passthrough(data)]
        if kind == "response.output_item.added":
            return [_tool_call(item)] if item_type == "function_call" else []
        out: list[BackendEvent] = []
        if item_type == "function_call":
            sent = self.args.pop(idx, "")
            final = item.get("arguments")
            if isinstance(final, str) and len(final) > len(sent) and (sent[:1] == "\0" or final.startswith(sent)):
                out.append(ToolArguments(final[len(sent) :]))
        elif item_type == "reasoning":
            token = item.get("encrypted_content")
            if isinstance(token, str) and token:
                out.append(ReasoningToken(token))
        out.append(ItemEnd())
        return out


#: upstream item types bgmode models itself (the rest are relayed as they are)
_MODELLED = ("message", "reasoning", "function_call")
#: what a model needs of each item it is given back
_ITEM_KEYS = {
    "message": ("type", "role", "content"),
    "function_call": ("type", "call_id", "name", "arguments"),
    "function_call_output": ("type", "call_id", "output"),
}


def _upstream_item(item: dict[str, Any]) -> dict[str, Any] | None:
    """An input item as the upstream gets it (no ids it never saw, no bgmode fields); None for
    a reasoning item that is not the upstream's own: OpenAI's schema requires a reasoning
    item's `id`, and an id the upstream never gave out fails the whole request, which is worse
    than the model not seeing its earlier reasoning (LiteLLM drops them too)."""
    kind = item.get("type", "message")
    keys = _ITEM_KEYS.get(kind)
    if keys is not None:
        out = {k: item[k] for k in keys if k in item}
        out.setdefault("type", kind)
        return out
    if kind == "reasoning":
        return item if item.get("encrypted_content") else None  # the upstream's own: id and token together
    return item


def _tool_call(item: dict[str, Any]) -> ToolCall:
    """The `ToolCall` for an upstream `function_call` item (a call id minted if it has none)."""
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise UpstreamFailure(f"upstream sent a function_call item without a name: {str(item)[:200]!r}")
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        call_id = "call_" + os.urandom(12).hex()
    return ToolCall(call_id, name)


def responses_usage(raw: dict[str, Any]) -> Usage:
    """`Usage` from a Responses `usage` object (missing details count as 0)."""
    output_details = raw.get("output_tokens_details") or {}
    input_details = raw.get("input_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
        reasoning_tokens=int(output_details.get("reasoning_tokens") or 0),
        cached_tokens=int(input_details.get("cached_tokens") or 0),
    )


def _subset(value: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    return {k: value[k] for k in keys if value.get(k) is not None}


def _code(code: Any) -> str:
    return code if isinstance(code, str) and code in RESPONSE_ERROR_CODES else "server_error"
