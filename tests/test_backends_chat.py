"""The `chat` backend against the fake upstream: translation, streaming, and every fault."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bgmode.backends.base import (
    BackendEvent,
    Finish,
    ModelRequest,
    ReasoningDelta,
    TextDelta,
    Usage,
    user_message,
)
from bgmode.backends.chat import ChatBackend, ChatOptions
from bgmode.backends.http import UpstreamSettings
from tests.fake_upstream import USAGE, FakeUpstream, closed_port, collect, text

KEY = "sk-test-Very-Secret-Key-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
async def backends() -> AsyncIterator[list[ChatBackend]]:
    made: list[ChatBackend] = []
    yield made
    for b in made:
        await b.aclose()


@pytest.fixture
def make(fake: FakeUpstream, backends: list[ChatBackend]) -> Any:
    def _make(options: ChatOptions | None = None, **settings: Any) -> ChatBackend:
        settings = {"base_url": fake.base_url, "retry_backoff": 0.01, **settings}
        backend = ChatBackend(UpstreamSettings(**settings), options)
        backends.append(backend)
        return backend

    return _make


def request(model: str = "m", **kw: Any) -> ModelRequest:
    return ModelRequest(model=model, input=[user_message(role="user", text="Say hello")], **kw)


async def test_translates_the_request(fake: FakeUpstream, make: Any) -> None:
    backend = make(api_key=KEY, upstream_model="llama3.1:8b")
    req = ModelRequest(
        model="llama3",
        instructions="Be brief.",
        input=[
            user_message(role="developer", text="House rules."),
            user_message(role="user", text="Hi"),
            user_message(role="assistant", text="Hello!"),
            user_message(role="user", text="Again"),
        ],
        max_output_tokens=64,
        temperature=0.2,
        top_p=0.9,
        reasoning_effort="low",
        verbosity="high",
        metadata={"k": "v"},
    )
    events, error = await collect(backend, req)
    assert error is None
    [sent] = fake.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body == {
        "model": "llama3.1:8b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "House rules."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Again"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "reasoning_effort": "low",
    }


async def test_options_choose_the_parameters(fake: FakeUpstream, make: Any) -> None:
    options = ChatOptions(
        max_tokens_param="max_completion_tokens",
        send_reasoning_effort=False,
        send_verbosity=True,
        stream_usage=False,
    )
    backend = make(options)
    await collect(backend, request(max_output_tokens=32, reasoning_effort="high", verbosity="low"))
    [body] = fake.bodies()
    assert body["max_completion_tokens"] == 32
    assert body["verbosity"] == "low"
    assert "max_tokens" not in body
    assert "reasoning_effort" not in body
    assert "stream_options" not in body
    assert "authorization" not in fake.requests[0].headers
    assert body["model"] == "m"  # no upstream_model: the client's name goes upstream


async def test_streams_text_then_usage_then_finish(make: Any) -> None:
    events, error = await collect(make(), request())
    assert error is None
    assert events == [
        TextDelta("Hello"),
        TextDelta(","),
        TextDelta(" world"),
        TextDelta("!"),
        Usage(
            input_tokens=USAGE["prompt_tokens"],
            output_tokens=USAGE["completion_tokens"],
            reasoning_tokens=USAGE["reasoning_tokens"],
            cached_tokens=USAGE["cached_tokens"],
        ),
        Finish(),
    ]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_chunks_become_reasoning_deltas(fake: FakeUpstream, make: Any, field: str) -> None:
    fake.plan(reasoning=["Let me ", "think."], text=["Hi"], reasoning_field=field)
    events, error = await collect(make(), request())
    assert error is None
    assert events[:3] == [ReasoningDelta("Let me "), ReasoningDelta("think."), TextDelta("Hi")]
    assert events[-1] == Finish()


async def test_usage_is_estimated_when_the_upstream_reports_none(fake: FakeUpstream, make: Any) -> None:
    fake.plan(usage=False, text=["x" * 40], reasoning=["y" * 20])
    events, error = await collect(make(), request())
    assert error is None
    usage = events[-2]
    assert isinstance(usage, Usage)
    assert usage.output_tokens == 15 and usage.reasoning_tokens == 5
    assert usage.input_tokens > 0


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("length", Finish("max_output_tokens")), ("content_filter", Finish("content_filter")), ("eos", Finish())],
)
async def test_finish_reasons(fake: FakeUpstream, make: Any, reason: str, finish: Finish) -> None:
    fake.plan(finish_reason=reason)
    events, error = await collect(make(), request())
    assert error is None
    assert events[-1] == finish


async def test_unreachable_retries_then_fails(make: Any) -> None:
    backend = make(base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=2, api_key=KEY)
    events, error = await collect(backend, request())
    assert events == []
    assert error is not None and error.code == "server_error"
    assert "unreachable" in error.message
    assert "gave up after 3 attempts" in error.message
    assert KEY not in error.message


async def test_429_then_success_honours_retry_after(fake: FakeUpstream, make: Any) -> None:
    fake.plan(fail_first=[429, 429], retry_after="0")
    events, error = await collect(make(max_retries=3), request())
    assert error is None
    assert text(events) == "Hello, world!"
    assert len(fake.requests) == 3


async def test_5xx_exhausts_the_retries_and_names_the_status(fake: FakeUpstream, make: Any) -> None:
    fake.plan(status=503, error_message="overloaded")
    events, error = await collect(make(max_retries=2), request())
    assert events == []
    assert error is not None and error.code == "server_error"
    assert "HTTP 503" in error.message and "overloaded" in error.message
    assert "gave up after 3 attempts" in error.message
    assert len(fake.requests) == 3


async def test_400_fails_at_once_with_the_upstream_message(fake: FakeUpstream, make: Any) -> None:
    fake.plan(status=400, error_message="max_tokens is too large: 99999")
    events, error = await collect(make(max_retries=3), request())
    assert events == []
    assert error is not None and error.code == "invalid_prompt"
    assert "max_tokens is too large: 99999" in error.message and "HTTP 400" in error.message
    assert len(fake.requests) == 1


async def test_break_mid_stream_fails_keeping_the_partial_output(fake: FakeUpstream, make: Any) -> None:
    fake.plan(break_after=2)
    events, error = await collect(make(max_retries=3), request())
    assert events == [TextDelta("Hello"), TextDelta(",")]
    assert error is not None and error.code == "server_error"
    assert "broke after 2 tokens" in error.message
    assert len(fake.requests) == 1  # output was streamed: never retried


async def test_break_before_the_first_token_is_retried(fake: FakeUpstream, make: Any) -> None:
    fake.plan(break_after=0)
    events, error = await collect(make(max_retries=1), request())
    assert events == []
    assert error is not None and "broke after 0 tokens" in error.message
    assert len(fake.requests) == 2


async def test_end_without_finish_or_done_is_a_break(fake: FakeUpstream, make: Any) -> None:
    fake.plan(finish_reason="", done=False, usage=False)
    events, error = await collect(make(max_retries=0), request())
    assert text(events) == "Hello, world!"
    assert error is not None and "broke after 4 tokens" in error.message


async def test_error_chunk_mid_stream_fails_keeping_output(fake: FakeUpstream, make: Any) -> None:
    fake.plan(fail_event="error", error_message="CUDA out of memory")
    events, error = await collect(make(), request())
    assert text(events) == "Hello, world!"
    assert error is not None and "CUDA out of memory" in error.message


async def test_stall_mid_stream_hits_the_idle_timeout(fake: FakeUpstream, make: Any) -> None:
    fake.plan(stall_after=2)
    events, error = await collect(make(idle_timeout=0.3), request())
    assert events == [TextDelta("Hello"), TextDelta(",")]
    assert error is not None and error.code == "server_error"
    assert "stalled" in error.message and "after 2 tokens" in error.message
    assert await fake.wait_disconnect()  # the stalled connection was let go


async def test_cancel_closes_the_upstream_connection(fake: FakeUpstream, make: Any) -> None:
    fake.plan(stall_after=2)
    backend = make(idle_timeout=60)
    got_two = asyncio.Event()
    seen: list[BackendEvent] = []

    async def consume() -> None:
        async for ev in backend.stream(request()):
            seen.append(ev)
            if len(seen) == 2:
                got_two.set()

    task = asyncio.create_task(consume())
    await got_two.wait()
    assert not fake.disconnected.is_set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fake.wait_disconnect()


async def test_max_concurrency_queues_before_connecting(fake: FakeUpstream, make: Any) -> None:
    fake.plan("hold", stall_after=1)
    backend = make(max_concurrency=1, idle_timeout=60)
    first_delta = asyncio.Event()

    async def hold() -> None:
        async for _ in backend.stream(request("hold")):
            first_delta.set()

    holder = asyncio.create_task(hold())
    await first_delta.wait()
    second = asyncio.create_task(collect(backend, request("quick")))
    while backend.waiting == 0:  # until the second stream queues for the slot
        await asyncio.sleep(0)
    assert backend.running == 1 and len(fake.requests) == 1
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    events, error = await second
    assert error is None and text(events) == "Hello, world!"
    assert [r.body["model"] for r in fake.requests] == ["hold", "quick"]
    assert fake.max_active == 1 and backend.running == 0


async def test_the_key_never_appears_in_errors_or_logs(
    fake: FakeUpstream, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.plan("bad", status=400, echo_auth=True)
    fake.plan("down", status=500, echo_auth=True, retry_after="0")
    backend = make(api_key=KEY, max_retries=2)
    for model in ("bad", "down"):
        _, error = await collect(backend, request(model))
        assert error is not None
        assert KEY not in error.message and KEY not in repr(error)
        assert "[redacted]" in error.message  # the upstream did echo it
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert "retry" in caplog.text  # the retries were logged ...
    assert KEY not in caplog.text  # ... without the key
    assert KEY not in repr(backend) and KEY not in repr(backend.settings)


async def test_silence_before_the_first_token_is_retried_then_fails(fake: FakeUpstream, make: Any) -> None:
    fake.plan(stall_after=0)
    events, error = await collect(make(idle_timeout=0.2, max_retries=1), request())
    assert events == []
    assert error is not None and "sent no data for 0.2s" in error.message
    assert "gave up after 2 attempts" in error.message
    assert len(fake.requests) == 2


async def test_a_json_answer_instead_of_a_stream_fails_clearly(fake: FakeUpstream, make: Any) -> None:
    fake.plan(json_body={"error": "streaming is not supported"})
    _, error = await collect(make(), request())
    assert error is not None
    assert "not an event stream: streaming is not supported" in error.message
    assert len(fake.requests) == 1


async def test_an_upstream_400_naming_a_parameter_says_which_option_to_turn_off(fake: FakeUpstream, make: Any) -> None:
    fake.plan(
        status=400,
        error_message="litellm.UnsupportedParamsError: gpt-x does not support parameters: ['reasoning_effort']",
    )
    events, err = await collect(make(), request(reasoning_effort="medium"))
    assert events == [] and err is not None and err.code == "invalid_prompt"
    assert "UnsupportedParamsError" in err.message
    assert "send_reasoning_effort=false" in err.message


@pytest.mark.parametrize(
    ("status", "code"), [(413, "invalid_prompt"), (422, "invalid_prompt"), (403, "server_error"), (404, "server_error")]
)
async def test_client_fault_statuses_fail_at_once(fake: FakeUpstream, make: Any, status: int, code: str) -> None:
    fake.plan(status=status)
    events, error = await collect(make(max_retries=3), request())
    assert events == [] and error is not None and error.code == code
    assert f"HTTP {status}" in error.message
    assert len(fake.requests) == 1  # not retried


@pytest.mark.parametrize("status", [408, 409])
async def test_408_and_409_are_retried(fake: FakeUpstream, make: Any, status: int) -> None:
    fake.plan(fail_first=[status], retry_after="0")
    events, error = await collect(make(max_retries=2), request())
    assert error is None and text(events) == "Hello, world!"
    assert len(fake.requests) == 2
