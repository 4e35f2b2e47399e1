"""The `responses` backend: any upstream `/v1/responses` (OpenAI, vLLM, another bgmode).

The upstream is asked statelessly: the whole expanded context goes as `input` (never a
`previous_response_id`, which would only exist in bgmode's own store), with `stream: true`
and `store: false`. `instructions`, `max_output_tokens`, `temperature`, `top_p`,
`reasoning.effort` and `text.verbosity` are sent when set; so are a few fields of the
client's own request that change only how the text is produced (`reasoning.summary`,
`text.format`, `truncation`, `service_tier`, `user`, `safety_identifier`, `prompt_cache_key`).

Upstream events become deltas, and the worker re-sequences them into bgmode's own event log:
`response.output_text.delta` (and `refusal.delta`) → `TextDelta`;
`response.reasoning_text.delta` / `response.reasoning_summary_text.delta` → `ReasoningDelta`;
the terminal `response.completed` / `response.incomplete` → `Usage` then `Finish`;
`response.failed` and `error` events → a failure with the upstream's message and code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from bgmode.backends.base import BackendEvent, Finish, ModelRequest, ReasoningDelta, TextDelta, Usage
from bgmode.backends.http import HTTPBackend, Progress, SSEEvent, UpstreamFailure, event_json

#: client request fields passed upstream as they are (they shape the output, not the job)
PASS_THROUGH = ("truncation", "service_tier", "user", "safety_identifier", "prompt_cache_key")

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

# Two content parts (or summary parts) are joined with a blank line rather than run together.
_PART_BREAK = "\n\n"


class ResponsesBackend(HTTPBackend):
    """Streams from an upstream `/responses` endpoint."""

    kind = "responses"
    path = "/responses"

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_for(request),
            "input": [{"type": "message", "role": m.role, "content": m.text} for m in request.messages],
            "stream": True,
            "store": False,
        }
        if request.instructions:
            body["instructions"] = request.instructions
        if request.max_output_tokens is not None:
            body["max_output_tokens"] = request.max_output_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        reasoning = _subset(request.body.get("reasoning"), ("summary",))
        if request.reasoning_effort:
            reasoning["effort"] = request.reasoning_effort
        if reasoning:
            body["reasoning"] = reasoning
        text = _subset(request.body.get("text"), ("format",))
        if request.verbosity:
            text["verbosity"] = request.verbosity
        if text:
            body["text"] = text
        for key in PASS_THROUGH:
            if request.body.get(key) is not None:
                body[key] = request.body[key]
        return body

    async def parse(
        self, events: AsyncIterator[SSEEvent], request: ModelRequest, progress: Progress
    ) -> AsyncIterator[BackendEvent]:
        text_part: tuple[Any, ...] | None = None
        reasoning_part: tuple[Any, ...] | None = None
        async for event in events:
            if event.data.strip() == "[DONE]":
                break  # not part of the Responses protocol, but some servers add it
            data = event_json(event)
            if not isinstance(data, dict):
                continue
            kind = data.get("type") or event.event
            delta = data.get("delta")
            if kind in ("response.output_text.delta", "response.refusal.delta"):
                if isinstance(delta, str) and delta:
                    part: tuple[Any, ...] = (data.get("output_index"), data.get("content_index"))
                    if text_part is not None and part != text_part:
                        yield TextDelta(_PART_BREAK)
                    text_part = part
                    yield TextDelta(delta)
            elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
                if isinstance(delta, str) and delta:
                    part = (kind, data.get("output_index"), data.get("content_index"))
                    part += (data.get("summary_index"),)
                    if reasoning_part is not None and part != reasoning_part:
                        yield ReasoningDelta(_PART_BREAK)
                    reasoning_part = part
                    yield ReasoningDelta(delta)
            elif kind in ("response.completed", "response.incomplete"):
                response = data.get("response") or {}
                usage = response.get("usage")
                yield responses_usage(usage) if isinstance(usage, dict) else progress.estimated_usage(request)
                if kind == "response.completed":
                    yield Finish()
                else:
                    reason = (response.get("incomplete_details") or {}).get("reason")
                    # Finish knows two reasons; any other cut-off (max_messages...) is a length limit.
                    yield Finish("content_filter" if reason == "content_filter" else "max_output_tokens")
                return
            elif kind == "response.failed":
                response = data.get("response") or {}
                if response.get("status") == "cancelled":
                    raise UpstreamFailure("the upstream response was cancelled")
                error = response.get("error") or {}
                raise UpstreamFailure(
                    f"upstream response failed: {error.get('message') or 'no message'}",
                    _code(error.get("code")),
                )
            elif kind == "error":
                # The spec's flat {code, message} and the nested {error: {...}} seen in real traffic.
                nested = data.get("error")
                flat: dict[str, Any] = nested if isinstance(nested, dict) else data
                raise UpstreamFailure(f"upstream error: {flat.get('message') or 'no message'}", _code(flat.get("code")))
        raise UpstreamFailure("upstream closed the stream before the response finished", retryable=True, broke=True)


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
