"""The `responses` backend against the fake upstream: translation, events, and faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bgmode.backends.base import (
    Annotation,
    BackendEvent,
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
    kw.setdefault("input", [user_message(role="user", text="Say hello")])
    return ModelRequest(model=model, **kw)


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


# -- items, tools and formats: sent as they are --------------------------------------------------

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
SCHEMA = {"type": "json_schema", "name": "W", "schema": {"type": "object"}, "strict": True}


async def test_items_tools_and_format_are_sent_as_they_are(fake: FakeUpstream, make: Any) -> None:
    image = {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "original"}
    pdf = {"type": "input_file", "file_data": "data:application/pdf;base64,JVBER", "filename": "a.pdf"}
    mine = {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "think"}],
        "content": [{"type": "reasoning_text", "text": "deeply"}],
    }
    bare = {"type": "reasoning", "id": "rs_local", "summary": []}
    theirs = {"type": "reasoning", "id": "rs_up", "summary": [], "encrypted_content": "gAAAA-upstream"}
    hosted = {
        "type": "web_search_call",
        "id": "ws_1",
        "status": "completed",
        "action": {"type": "search", "query": "oslo weather"},
    }
    fc = {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Oslo"}'}
    out = {"type": "function_call_output", "call_id": "call_a", "output": [{"type": "input_text", "text": "rain"}]}
    tools = [WEATHER, {"type": "web_search"}, {"type": "mcp", "server_label": "x", "server_url": "https://x"}]
    req = request(
        input=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Look:"}, image, pdf]},
            mine,
            bare,
            theirs,
            hosted,
            {**fc, "bgmode_extra": 1},
            out,
        ],
        tools=tools,
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        max_tool_calls=4,
        text_format=SCHEMA,
        include=["reasoning.encrypted_content"],
        body={"text": {"format": {"type": "text"}}},
    )
    _, error = await collect(make(), req)
    assert error is None
    body = fake.bodies("/responses")[0]
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Look:"}, image, pdf]},
        # bgmode's own reasoning items are not sent (an id the upstream never gave out would fail
        # the request); the upstream's own token goes back with its id
        theirs,
        hosted,
        fc,
        out,
    ]
    assert body["tools"] == tools
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["parallel_tool_calls"] is False
    assert body["max_tool_calls"] == 4
    assert body["text"] == {"format": SCHEMA}  # the validated format, not the raw body's
    assert body["include"] == ["reasoning.encrypted_content"]


async def test_no_tools_no_include_sends_none_of_them(fake: FakeUpstream, make: Any) -> None:
    await collect(make(), request(text_format={"type": "json_object"}))
    body = fake.bodies("/responses")[0]
    assert not {"tools", "tool_choice", "parallel_tool_calls", "max_tool_calls", "include"} & set(body)
    assert body["text"] == {"format": {"type": "json_object"}}


# -- upstream events → typed output -----------------------------------------------------------


def _event(kind: str, index: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "output_index": index, **fields}


async def test_reasoning_summary_parts_text_and_token(fake: FakeUpstream, make: Any) -> None:
    rs = {"id": "rs_9", "type": "reasoning", "summary": [], "status": "in_progress"}
    fake.plan(
        text=["Hi"],
        events=[
            _event("response.output_item.added", 0, item=rs),
            _event("response.reasoning_summary_part.added", 0, item_id="rs_9", summary_index=0),
            _event("response.reasoning_summary_text.delta", 0, item_id="rs_9", summary_index=0, delta="First"),
            _event("response.reasoning_summary_text.delta", 0, item_id="rs_9", summary_index=1, delta="Second"),
            _event("response.reasoning_text.delta", 0, item_id="rs_9", content_index=0, delta="raw"),
            _event("response.output_item.done", 0, item={**rs, "status": "completed", "encrypted_content": "tok"}),
        ],
    )
    events, error = await collect(make(), request())
    assert error is None
    assert events[:5] == [
        ReasoningDelta("First", summary=True, part=0),
        ReasoningDelta("Second", summary=True, part=1),
        ReasoningDelta("raw"),
        ReasoningToken("tok"),  # before the item ends
        ItemEnd(),
    ]
    assert events[5:] == [TextDelta("Hi"), ItemEnd(), FAKE_USAGE, Finish()]


async def test_hosted_tool_items_are_relayed_verbatim(fake: FakeUpstream, make: Any) -> None:
    ann = {"type": "url_citation", "url": "https://e.com", "title": "e", "start_index": 0, "end_index": 2}
    fake.plan(hosted=True, annotation=ann, text=["Hi", "!"])
    events, error = await collect(make(), request(tools=[{"type": "web_search"}]))
    assert error is None
    relayed = [e.event for e in events if isinstance(e, Passthrough)]
    ws = {"id": "ws_1", "type": "web_search_call", "status": "in_progress"}
    assert [{k: v for k, v in ev.items() if k != "sequence_number"} for ev in relayed] == [
        {"type": "response.output_item.added", "output_index": 0, "item": ws},
        {"type": "response.web_search_call.in_progress", "output_index": 0, "item_id": "ws_1"},
        {"type": "response.web_search_call.searching", "output_index": 0, "item_id": "ws_1"},
        {"type": "response.web_search_call.completed", "output_index": 0, "item_id": "ws_1"},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {**ws, "status": "completed", "action": {"type": "search", "query": "q"}},
        },
    ]
    assert events[len(relayed) :] == [
        TextDelta("Hi"),
        TextDelta("!"),
        Annotation(ann),
        ItemEnd(),
        FAKE_USAGE,
        Finish(),
    ]


async def test_any_unmodelled_item_type_is_relayed(fake: FakeUpstream, make: Any) -> None:
    mcp = {"id": "mcp_1", "type": "mcp_call", "status": "in_progress", "name": "q", "server_label": "x"}
    fake.plan(
        text=["ok"],
        events=[
            _event("response.output_item.added", 0, item=mcp),
            _event("response.mcp_call_arguments.delta", 0, item_id="mcp_1", delta="{}"),
            _event("response.mcp_call.completed", 0, item_id="mcp_1"),
            _event("response.output_item.done", 0, item={**mcp, "status": "completed", "output": "42"}),
        ],
    )
    events, error = await collect(make(), request())
    assert error is None
    assert [type(e).__name__ for e in events[:4]] == ["Passthrough"] * 4
    assert [e.event["type"] for e in events[:4] if isinstance(e, Passthrough)] == [
        "response.output_item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    assert events[4:] == [TextDelta("ok"), ItemEnd(), FAKE_USAGE, Finish()]


async def test_function_call_items_become_tool_calls(fake: FakeUpstream, make: Any) -> None:
    fake.plan(
        tool_calls=[
            {"name": "get_weather", "arguments": ['{"city"', ':"Oslo"}'], "id": "call_w"},
            {"name": "get_time", "arguments": ["{}"], "id": "call_t", "no_deltas": True},
        ]
    )
    events, error = await collect(make(), request(tools=[WEATHER]))
    assert error is None
    assert events == [
        ToolCall("call_w", "get_weather"),
        ToolArguments('{"city"'),
        ToolArguments(':"Oslo"}'),
        ItemEnd(),
        ToolCall("call_t", "get_time"),
        ToolArguments("{}"),  # only in output_item.done: yielded there, once
        ItemEnd(),
        FAKE_USAGE,
        Finish(),
    ]


async def test_arguments_half_streamed_get_their_remainder(fake: FakeUpstream, make: Any) -> None:
    fc = {"id": "fc_1", "type": "function_call", "status": "in_progress", "call_id": "c", "name": "f", "arguments": ""}
    fake.plan(
        text=[],
        events=[
            _event("response.output_item.added", 0, item=fc),
            _event("response.function_call_arguments.delta", 0, item_id="fc_1", delta='{"a":'),
            _event("response.output_item.done", 0, item={**fc, "status": "completed", "arguments": '{"a":1}'}),
        ],
    )
    events, _ = await collect(make(), request())
    assert events[:4] == [ToolCall("c", "f"), ToolArguments('{"a":'), ToolArguments("1}"), ItemEnd()]


async def test_a_function_call_without_call_id_gets_one(fake: FakeUpstream, make: Any) -> None:
    fake.plan(tool_calls=[{"name": "f", "arguments": ["{}"], "id": None}])
    events, error = await collect(make(), request())
    assert error is None
    first = events[0]
    assert isinstance(first, ToolCall) and first.name == "f" and first.call_id.startswith("call_")


async def test_a_function_call_without_a_name_fails(fake: FakeUpstream, make: Any) -> None:
    fc = {"id": "fc_1", "type": "function_call", "call_id": "c", "arguments": ""}
    fake.plan(text=[], events=[_event("response.output_item.added", 0, item=fc)])
    events, error = await collect(make(max_retries=2), request())
    assert events == []
    assert error is not None and "without a name" in error.message
    assert len(fake.requests) == 1


async def test_two_upstream_messages_stay_two_items(fake: FakeUpstream, make: Any) -> None:
    msg = {"id": "msg_a", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    fake.plan(
        text=["second"],
        refusal=["no"],
        events=[
            _event("response.output_item.added", 0, item=msg),
            _event("response.content_part.added", 0, item_id="msg_a", content_index=0, part={"type": "output_text"}),
            _event("response.output_text.delta", 0, item_id="msg_a", content_index=0, delta="first"),
            _event("response.output_text.done", 0, item_id="msg_a", content_index=0, text="first"),
            _event("response.output_item.done", 0, item={**msg, "status": "completed"}),
        ],
    )
    events, error = await collect(make(), request())
    assert error is None
    assert events == [
        TextDelta("first"),
        ItemEnd(),
        TextDelta("second"),
        RefusalDelta("no"),
        ItemEnd(),
        FAKE_USAGE,
        Finish(),
    ]


async def test_a_break_after_a_relayed_event_is_not_retried(fake: FakeUpstream, make: Any) -> None:
    fake.plan(hosted=True, break_after=0)
    events, error = await collect(make(max_retries=3), request())
    assert len(events) == 5 and all(isinstance(e, Passthrough) for e in events)
    assert error is not None and "broke after 5 tokens" in error.message
    assert len(fake.requests) == 1


async def test_a_break_after_a_tool_call_is_not_retried(fake: FakeUpstream, make: Any) -> None:
    fake.plan(tool_calls=[{"name": "f", "arguments": ["{", "}"]}], break_after=0)
    events, error = await collect(make(max_retries=3), request())
    assert events == [ToolCall("call_fake_0", "f")]
    assert error is not None and "broke after 1 tokens" in error.message
    assert len(fake.requests) == 1


async def test_estimated_usage_counts_refusal_and_arguments(fake: FakeUpstream, make: Any) -> None:
    fake.plan(usage=False, text=[], refusal=["r" * 8])
    events, _ = await collect(make(), request())
    usage = events[-2]
    assert isinstance(usage, Usage) and usage.output_tokens == 2
    fake.plan(usage=False, tool_calls=[{"name": "abcd", "arguments": ["x" * 12]}])
    events, _ = await collect(make(), request())
    usage = events[-2]
    assert isinstance(usage, Usage) and usage.output_tokens == 4  # the name and the arguments
