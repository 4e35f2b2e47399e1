"""The `chat` backend against the fake upstream: translation, streaming, and every fault."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest

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
    kw.setdefault("input", [user_message(role="user", text="Say hello")])
    return ModelRequest(model=model, **kw)


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


# -- items, tools and formats: Responses → Chat ------------------------------------------------

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
CLOCK = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


def call(call_id: str, name: str = "get_weather", arguments: str = '{"city":"Oslo"}') -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


async def test_message_parts_become_chat_content(fake: FakeUpstream, make: Any) -> None:
    image = {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "original"}
    small = {"type": "input_image", "image_url": "data:image/png;base64,iVBOR", "detail": "low"}
    data_file = {"type": "input_file", "file_data": "data:application/pdf;base64,JVBER", "filename": "a.pdf"}
    url_file = {"type": "input_file", "file_url": "https://example.com/b.pdf"}
    req = request(
        input=[
            {"type": "message", "role": "user", "content": "plain string"},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "one "}, {"type": "input_text", "text": "two"}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Look:"}, image, small, data_file, url_file],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "I see "}, {"type": "refusal", "refusal": "nothing"}],
            },
        ]
    )
    _, error = await collect(make(ChatOptions(accept_files=True)), req)
    assert error is None
    assert fake.bodies()[0]["messages"] == [
        {"role": "user", "content": "plain string"},
        {"role": "user", "content": "one two"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "auto"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "low"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER", "filename": "a.pdf"}},
                {"type": "file", "file": {"file_id": "https://example.com/b.pdf"}},
            ],
        },
        {"role": "assistant", "content": "I see nothing"},
    ]


async def test_function_calls_and_outputs_become_tool_calls_and_tool_messages(fake: FakeUpstream, make: Any) -> None:
    shot = {"type": "input_image", "image_url": "https://example.com/chart.png", "detail": "high"}
    req = request(
        instructions="Use tools.",
        input=[
            user_message("Weather in Oslo and Rome, and the time?"),
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "two cities"}], "content": []},
            user_message("Let me look.", role="assistant"),
            call("call_a"),
            call("call_b", arguments='{"city":"Rome"}'),
            {"type": "function_call_output", "call_id": "call_a", "output": "rain"},
            {
                "type": "function_call_output",
                "call_id": "call_b",
                "output": [{"type": "input_text", "text": "sun, "}, {"type": "input_text", "text": "25C"}],
            },
            call("call_c", name="get_time", arguments="{}"),
            {
                "type": "function_call_output",
                "call_id": "call_c",
                "output": [{"type": "input_text", "text": "noon"}, shot],
            },
            {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
            user_message("Thanks"),
        ],
    )
    _, error = await collect(make(), req)
    assert error is None

    def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}

    assert fake.bodies()[0]["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Oslo and Rome, and the time?"},
        # reasoning is not sent; the calls join the assistant message before them
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                tool_call("call_a", "get_weather", '{"city":"Oslo"}'),
                tool_call("call_b", "get_weather", '{"city":"Rome"}'),
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_b", "content": "sun, 25C"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("call_c", "get_time", "{}")]},
        {
            "role": "tool",
            "tool_call_id": "call_c",
            "content": [
                {"type": "text", "text": "noon"},
                {"type": "image_url", "image_url": {"url": "https://example.com/chart.png", "detail": "high"}},
            ],
        },
        # the hosted-tool item has no Chat equivalent
        {"role": "user", "content": "Thanks"},
    ]


async def test_tools_are_nested_and_sent_with_their_choice(fake: FakeUpstream, make: Any) -> None:
    hosted = {"type": "web_search"}
    await collect(make(), request(tools=[WEATHER, CLOCK, hosted], parallel_tool_calls=False))
    body = fake.bodies()[0]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER["parameters"],
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "get_time", "parameters": CLOCK["parameters"]}},
    ]
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("none", "none"),
        ("auto", "auto"),
        ("required", "required"),
        ({"type": "function", "name": "get_time"}, {"type": "function", "function": {"name": "get_time"}}),
        (
            {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]},
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                },
            },
        ),
        (
            {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_time"}]},
            {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_time"}}]},
            },
        ),
    ],
)
async def test_tool_choice_is_translated(fake: FakeUpstream, make: Any, choice: Any, sent: Any) -> None:
    await collect(make(), request(tools=[WEATHER, CLOCK], tool_choice=choice))
    body = fake.bodies()[0]
    assert body["tool_choice"] == sent
    assert body["parallel_tool_calls"] is True


async def test_no_tools_sends_no_tool_fields(fake: FakeUpstream, make: Any) -> None:
    await collect(make(), request(tool_choice="none", parallel_tool_calls=False))
    body = fake.bodies()[0]
    assert "tools" not in body and "tool_choice" not in body and "parallel_tool_calls" not in body


@pytest.mark.parametrize(
    ("fmt", "sent"),
    [
        (
            {"type": "json_schema", "name": "W", "schema": {"type": "object"}, "strict": True, "description": "d"},
            {
                "type": "json_schema",
                "json_schema": {"name": "W", "schema": {"type": "object"}, "strict": True, "description": "d"},
            },
        ),
        (
            {"type": "json_schema", "name": "W", "schema": {"type": "object"}},
            {"type": "json_schema", "json_schema": {"name": "W", "schema": {"type": "object"}, "strict": False}},
        ),
        ({"type": "json_object"}, {"type": "json_object"}),
        ({"type": "text"}, None),
        (None, None),
    ],
)
async def test_text_format_becomes_response_format(fake: FakeUpstream, make: Any, fmt: Any, sent: Any) -> None:
    await collect(make(), request(text_format=fmt))
    assert fake.bodies()[0].get("response_format") == sent


# -- streamed output: Chat → typed events --------------------------------------------------------


async def test_streamed_tool_calls_become_tool_call_events(fake: FakeUpstream, make: Any) -> None:
    fake.plan(
        tool_calls=[
            {"name": "get_weather", "arguments": ['{"ci', 'ty":', '"Oslo"}'], "id": "call_w"},
            {"name": "get_time", "arguments": ["{", "}"], "id": "call_t"},
        ]
    )
    events, error = await collect(make(), request(tools=[WEATHER, CLOCK]))
    assert error is None
    assert events == [
        ToolCall("call_w", "get_weather"),
        ToolArguments('{"ci'),
        ToolArguments('ty":'),
        ToolArguments('"Oslo"}'),
        ToolCall("call_t", "get_time"),
        ToolArguments("{}"),
        Usage(
            input_tokens=USAGE["prompt_tokens"],
            output_tokens=USAGE["completion_tokens"],
            reasoning_tokens=USAGE["reasoning_tokens"],
            cached_tokens=USAGE["cached_tokens"],
        ),
        Finish(),  # finish_reason "tool_calls" is a normal stop
    ]
    assert fake.bodies()[0]["messages"][-1] == {"role": "user", "content": "Say hello"}


async def test_the_first_call_streams_before_the_stream_ends(fake: FakeUpstream, make: Any) -> None:
    fake.plan(tool_calls=[{"name": "get_weather", "arguments": ['{"city":', '"Oslo"}']}], stall_after=2)
    backend = make(idle_timeout=60)
    seen: list[BackendEvent] = []
    async with aclosing(backend.stream(request())) as stream:
        async for ev in stream:
            seen.append(ev)
            if len(seen) == 2:
                break
    assert await fake.wait_disconnect()  # still streaming when the two events came; closed now
    assert seen == [ToolCall("call_fake_0", "get_weather"), ToolArguments('{"city":')]


async def test_a_missing_call_id_is_minted(fake: FakeUpstream, make: Any) -> None:
    fake.plan(tool_calls=[{"name": "get_time", "arguments": ["{}"], "id": None}])
    events, error = await collect(make(), request())
    assert error is None
    first = events[0]
    assert isinstance(first, ToolCall) and first.name == "get_time"
    assert first.call_id.startswith("call_") and len(first.call_id) == 5 + 24
    assert events[1] == ToolArguments("{}")


async def test_interleaved_calls_come_out_whole_in_index_order(fake: FakeUpstream, make: Any) -> None:
    fake.plan(
        interleave=True,
        tool_calls=[
            {"name": "a", "arguments": ['{"x":', "1", "}"]},
            {"name": "b", "arguments": ['{"y":2}']},
            {"name": "c", "arguments": ["{", '"z":', "3", "}"]},
        ],
    )
    events, error = await collect(make(), request())
    assert error is None
    assert events[:-2] == [
        ToolCall("call_fake_0", "a"),
        ToolArguments('{"x":'),
        ToolArguments("1"),
        ToolArguments("}"),
        ToolCall("call_fake_1", "b"),
        ToolArguments('{"y":2}'),
        ToolCall("call_fake_2", "c"),
        ToolArguments('{"z":3}'),
    ]
    assert events[-1] == Finish()


async def test_an_id_before_the_name_waits_for_the_name(fake: FakeUpstream, make: Any) -> None:
    fake.plan(
        text=[],
        chat_deltas=[
            {"tool_calls": [{"index": 0, "id": "call_late", "type": "function"}]},
            {"tool_calls": [{"index": 0, "function": {"name": "get_time"}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
        ],
    )
    events, error = await collect(make(), request())
    assert error is None
    assert events[:2] == [ToolCall("call_late", "get_time"), ToolArguments("{}")]


async def test_text_then_a_tool_call_in_one_turn(fake: FakeUpstream, make: Any) -> None:
    fake.plan(
        text=["Checking"],
        chat_deltas=[
            {"content": ".", "tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
        ],
    )
    events, error = await collect(make(), request())
    assert error is None
    assert events[:4] == [TextDelta("Checking"), TextDelta("."), ToolCall("call_1", "f"), ToolArguments("{}")]


async def test_a_refusal_streams_as_refusal_deltas(fake: FakeUpstream, make: Any) -> None:
    fake.plan(text=[], refusal=["I can't", " help with that."])
    events, error = await collect(make(), request())
    assert error is None
    assert events[:2] == [RefusalDelta("I can't"), RefusalDelta(" help with that.")]
    assert events[-1] == Finish()


async def test_reasoning_content_wins_over_reasoning(fake: FakeUpstream, make: Any) -> None:
    fake.plan(text=["ok"], chat_deltas=[{"reasoning_content": "A", "reasoning": "B"}, {"reasoning": "C"}])
    events, _ = await collect(make(), request())
    assert [e for e in events if isinstance(e, ReasoningDelta)] == [ReasoningDelta("A"), ReasoningDelta("C")]


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"index": 0, "function": {"arguments": "{}"}}, "which has no name"),
        ({"function": {"name": "f"}}, "no index"),
        ({"index": "0", "function": {"name": "f"}}, "no index"),
        ({"index": 0, "function": "f"}, "function is not an object"),
        ("not an object", "not an object"),
        ({"index": 0, "id": "call_x"}, "without a name"),
    ],
)
async def test_a_malformed_tool_call_fails_keeping_the_output(
    fake: FakeUpstream, make: Any, bad: Any, words: str
) -> None:
    fake.plan(text=["partial"], bad_tool_call=bad)
    events, error = await collect(make(max_retries=3), request())
    assert events == [TextDelta("partial")]
    assert error is not None and error.code == "server_error"
    assert "tool call" in error.message and words in error.message
    assert len(fake.requests) == 1


async def test_tool_calls_not_a_list_fails(fake: FakeUpstream, make: Any) -> None:
    fake.plan(text=["partial"], chat_deltas=[{"tool_calls": {"index": 0}}])
    events, error = await collect(make(), request())
    assert events == [TextDelta("partial")]
    assert error is not None and "tool_calls is not a list" in error.message


async def test_a_failure_keeps_the_held_calls(fake: FakeUpstream, make: Any) -> None:
    fake.plan(
        tool_calls=[{"name": "a", "arguments": ["{", "}"]}, {"name": "b", "arguments": ["{", "}"]}],
        interleave=True,
        bad_tool_call={"index": 5, "function": {"arguments": "x"}},
    )
    events, error = await collect(make(), request())
    assert error is not None and "which has no name" in error.message
    assert events == [
        ToolCall("call_fake_0", "a"),
        ToolArguments("{"),
        ToolArguments("}"),
        ToolCall("call_fake_1", "b"),
        ToolArguments("{}"),
    ]


async def test_a_break_after_a_tool_call_is_not_retried(fake: FakeUpstream, make: Any) -> None:
    fake.plan(tool_calls=[{"name": "get_time", "arguments": ["{", "}"]}], break_after=1)
    events, error = await collect(make(max_retries=3), request())
    assert events == [ToolCall("call_fake_0", "get_time")]
    assert error is not None and "broke after 1 tokens" in error.message
    assert len(fake.requests) == 1


async def test_a_break_after_a_refusal_is_not_retried(fake: FakeUpstream, make: Any) -> None:
    fake.plan(text=[], refusal=["No", "pe"], break_after=1)
    events, error = await collect(make(max_retries=3), request())
    assert events == [RefusalDelta("No")]
    assert error is not None and len(fake.requests) == 1


async def test_estimated_usage_counts_refusals_and_arguments(fake: FakeUpstream, make: Any) -> None:
    fake.plan(usage=False, text=[], refusal=["r" * 8], chat_deltas=[], tool_calls=[])
    events, _ = await collect(make(), request())
    usage = events[-2]
    assert isinstance(usage, Usage) and usage.output_tokens == 2 and usage.reasoning_tokens == 0
    fake.plan(usage=False, tool_calls=[{"name": "abcd", "arguments": ["x" * 12]}])
    events, _ = await collect(make(), request())
    usage = events[-2]
    assert isinstance(usage, Usage) and usage.output_tokens == 4 and usage.input_tokens > 0  # 4 + 12 chars
