"""The `responses` backend against the fake upstream: translation, events, and faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bgmode.backends.base import (
    BackendEvent,
    Finish,
    ItemEnd,
    ModelRequest,
    ReasoningDelta,
    TextDelta,
    Usage,
    user_message,
)
from bgmode.backends.http import UpstreamSettings
from bgmode.backends.responses import ResponsesBackend
from tests.fake_upstream import USAGE, FakeUpstream, closed_port, collect, text

KEY = "sk-test-Another-Secret-9876543210"
FAKE_USAGE = Usage(
    input_tokens=USAGE["prompt_tokens"],
    output_tokens=USAGE["completion_tokens"],
    reasoning_tokens=USAGE["reasoning_tokens"],
    cached_tokens=USAGE["cached_tokens"],
)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
async def make(fake: FakeUpstream) -> AsyncIterator[Any]:
    made: list[ResponsesBackend] = []

    def _make(**settings: Any) -> ResponsesBackend:
        settings = {"base_url": fake.base_url, "retry_backoff": 0.01, **settings}
        made.append(ResponsesBackend(UpstreamSettings(**settings)))
        return made[-1]

    yield _make
    for b in made:
        await b.aclose()


def request(model: str = "m", **kw: Any) -> ModelRequest:
    return ModelRequest(model=model, input=[user_message(role="user", text="Say hello")], **kw)


async def test_sends_the_whole_context_statelessly(fake: FakeUpstream, make: Any) -> None:
    backend = make(api_key=KEY, upstream_model="gpt-5-mini")
    client_body = {
        "model": "mini",
        "input": "Again",
        "previous_response_id": "resp_local",
        "background": True,
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "service_tier": "flex",
        "metadata": {"sim_output_tokens": "3"},
        "tools": [],
    }
    req = ModelRequest(
        model="mini",
        instructions="Be brief.",
        input=[
            user_message(role="user", text="Hi"),
            user_message(role="assistant", text="Hello!"),
            user_message(role="user", text="Again"),
        ],
        max_output_tokens=100,
        temperature=0.5,
        top_p=0.8,
        reasoning_effort="low",
        verbosity="low",
        metadata={"sim_output_tokens": "3"},
        body=client_body,
    )
    _, error = await collect(backend, req)
    assert error is None
    [sent] = fake.requests
    assert sent.path == "/v1/responses"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body == {
        "model": "gpt-5-mini",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Again"}]},
        ],
        "stream": True,
        "store": False,
        "instructions": "Be brief.",
        "max_output_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.8,
        "reasoning": {"summary": "auto", "effort": "low"},
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "service_tier": "flex",
    }


async def test_streams_text_usage_and_finish(make: Any) -> None:
    events, error = await collect(make(), request())
    assert error is None
    assert events == [
        TextDelta("Hello"),
        TextDelta(","),
        TextDelta(" world"),
        TextDelta("!"),
        ItemEnd(),
        FAKE_USAGE,
        Finish(),
    ]


@pytest.mark.parametrize("field", ["text", "summary"])
async def test_reasoning_events_become_reasoning_deltas(fake: FakeUpstream, make: Any, field: str) -> None:
    fake.plan(reasoning=["Hmm, ", "ok."], text=["Hi"], reasoning_field=field)
    events, error = await collect(make(), request())
    assert error is None
    summary = field == "summary"
    assert events == [
        ReasoningDelta("Hmm, ", summary=summary),
        ReasoningDelta("ok.", summary=summary),
        ItemEnd(),
        TextDelta("Hi"),
        ItemEnd(),
        FAKE_USAGE,
        Finish(),
    ]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("length", Finish("max_output_tokens")), ("content_filter", Finish("content_filter"))],
)
async def test_incomplete_keeps_usage_and_reason(fake: FakeUpstream, make: Any, reason: str, finish: Finish) -> None:
    fake.plan(finish_reason=reason)
    events, error = await collect(make(), request())
    assert error is None
    assert events[-2:] == [FAKE_USAGE, finish]


async def test_missing_usage_is_estimated(fake: FakeUpstream, make: Any) -> None:
    fake.plan(usage=False)
    events, error = await collect(make(), request())
    assert error is None
    usage = events[-2]
    assert isinstance(usage, Usage) and usage.output_tokens > 0


async def test_response_failed_keeps_output_and_the_upstream_message(fake: FakeUpstream, make: Any) -> None:
    fake.plan(fail_event="failed", error_message="the model crashed")
    events, error = await collect(make(max_retries=3), request())
    assert text(events) == "Hello, world!"
    assert error is not None and error.code == "server_error"
    assert "the model crashed" in error.message
    assert len(fake.requests) == 1


async def test_nested_error_event_fails_with_its_code(fake: FakeUpstream, make: Any) -> None:
    fake.plan(fail_event="error", error_message="slow down")
    events, error = await collect(make(), request())
    assert text(events) == "Hello, world!"
    assert error is not None and error.code == "rate_limit_exceeded"
    assert "slow down" in error.message


async def test_5xx_then_success(fake: FakeUpstream, make: Any) -> None:
    fake.plan(fail_first=[502, 503])
    events, error = await collect(make(max_retries=2), request())
    assert error is None and text(events) == "Hello, world!"
    assert len(fake.requests) == 3


async def test_500_forever_fails_naming_the_status(fake: FakeUpstream, make: Any) -> None:
    fake.plan(status=500)
    events, error = await collect(make(max_retries=1), request())
    assert events == []
    assert error is not None and error.code == "server_error"
    assert "HTTP 500 Internal Server Error" in error.message


async def test_400_is_not_retried(fake: FakeUpstream, make: Any) -> None:
    fake.plan(status=400, error_message="Unsupported parameter: 'temperature'")
    _, error = await collect(make(max_retries=3), request())
    assert error is not None and error.code == "invalid_prompt"
    assert "Unsupported parameter: 'temperature'" in error.message
    assert len(fake.requests) == 1


async def test_unreachable(make: Any) -> None:
    _, error = await collect(make(base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=0), request())
    assert error is not None and error.code == "server_error" and "unreachable" in error.message


async def test_break_mid_stream_keeps_partial_output(fake: FakeUpstream, make: Any) -> None:
    fake.plan(break_after=3)
    events, error = await collect(make(max_retries=3), request())
    assert text(events) == "Hello, world"
    assert error is not None and "broke after 3 tokens" in error.message
    assert len(fake.requests) == 1


async def test_stall_hits_the_idle_timeout(fake: FakeUpstream, make: Any) -> None:
    fake.plan(stall_after=1)
    events, error = await collect(make(idle_timeout=0.3), request())
    assert events == [TextDelta("Hello")]
    assert error is not None and "stalled" in error.message
    assert await fake.wait_disconnect()


async def test_cancel_closes_the_upstream_connection(fake: FakeUpstream, make: Any) -> None:
    fake.plan(stall_after=1)
    backend = make(idle_timeout=60)
    first = asyncio.Event()
    seen: list[BackendEvent] = []

    async def consume() -> None:
        async for ev in backend.stream(request()):
            seen.append(ev)
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fake.wait_disconnect()
    assert seen == [TextDelta("Hello")]


async def test_key_is_redacted_from_upstream_errors(fake: FakeUpstream, make: Any) -> None:
    fake.plan(status=401, echo_auth=True)
    _, error = await collect(make(api_key=KEY), request())
    assert error is not None and "HTTP 401" in error.message
    assert KEY not in error.message and "[redacted]" in error.message
