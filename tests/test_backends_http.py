"""The shared HTTP helpers: SSE decoding, upstream error bodies, Retry-After, URL redaction,
what counts as output streamed."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from bgmode.backends.base import (
    Annotation,
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
    user_message,
)
from bgmode.backends.http import Progress, SSEEvent, error_message, iter_sse, public_url
from bgmode.retry_after import retry_after


async def chunks(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_iter_sse_joins_data_lines_and_skips_comments() -> None:
    body = b": keep-alive\n\nevent: a\ndata: {\ndata: 1}\n\ndata:[DONE]\n\ndata: cut"
    events = [e async for e in iter_sse(chunks(body))]
    assert events == [SSEEvent("a", "{\n1}"), SSEEvent("message", "[DONE]")]  # the cut event is dropped


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
async def test_iter_sse_any_chunking_and_line_endings(size: int) -> None:
    body = 'data: héllo\r\n\r\nevent: x\rdata: a\rdata: b\r\rdata: {"k": 1}\n\n'.encode()
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    events = [e async for e in iter_sse(chunks(*pieces))]
    assert events == [SSEEvent("message", "héllo"), SSEEvent("x", "a\nb"), SSEEvent("message", '{"k": 1}')]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": {"message": "bad max_tokens", "type": "invalid_request_error"}}', "bad max_tokens"),
        (b'{"error": "model \\"x\\" not found, try pulling it first"}', 'model "x" not found, try pulling it first'),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"object": "error", "message": "vllm says no"}', "vllm says no"),
        (b"<html>\n  Bad   Gateway\n</html>", "<html> Bad Gateway </html>"),
        # a gateway that answers an error as an event stream
        (
            b'data: {"error": {"message": "UnsupportedParamsError: reasoning_effort"}}\n\ndata: [DONE]\n\n',
            "UnsupportedParamsError: reasoning_effort",
        ),
        (b"", ""),
    ],
)
def test_error_message_understands_common_shapes(body: bytes, message: str) -> None:
    assert error_message(body) == message


def test_error_message_is_capped() -> None:
    assert len(error_message(b"x" * 10_000)) <= 501


def test_retry_after_forms() -> None:
    assert retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    assert retry_after(httpx.Headers({})) is None
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    waited = retry_after(httpx.Headers({"retry-after": date}))
    assert waited is not None and 0 < waited <= 31


def test_public_url_drops_credentials_and_query() -> None:
    assert public_url("https://user:pw@host:8443/v1?api-key=pw#x") == "https://host:8443/v1"
    assert public_url("http://127.0.0.1:11434/v1") == "http://127.0.0.1:11434/v1"


def test_progress_counts_every_kind_of_output() -> None:
    progress = Progress()
    for event in (
        TextDelta("abcd"),
        RefusalDelta("efgh"),
        ReasoningDelta("ijkl"),
        ReasoningDelta("mnop", summary=True, part=1),
        ReasoningToken("opaque"),
        ToolCall("call_1", "name"),
        ToolArguments("{}{}"),
        Annotation({"type": "url_citation"}),
        Passthrough({"type": "response.output_item.added"}),
        ItemEnd(),
        Usage(1, 2),
        Finish(),
    ):
        progress.count(event)
    assert progress.deltas == 10  # everything but usage and finish: no retry once any came
    usage = progress.estimated_usage(ModelRequest(model="m", input=[user_message("x" * 8)]))
    # text, refusal, tool name and arguments are output; reasoning is output and reasoning
    assert usage == Usage(input_tokens=2, output_tokens=4 + 2, reasoning_tokens=2)


def test_progress_with_nothing_streamed() -> None:
    progress = Progress()
    progress.count(Usage(1, 2))
    assert progress.deltas == 0
    assert progress.estimated_usage(ModelRequest(model="m", input=[])) == Usage(0, 0)
