"""Items through the HTTP upstreams, both ways, against the fake upstream (a test double) over
loopback: what `chat` and `responses` send for tools, tool calls and results, images, files,
reasoning and structured output, and what they make of streamed tool calls, refusals,
annotations, encrypted reasoning and hosted-tool items."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bgmode.backends.base import (
    Annotation,
    ItemEnd,
    ModelRequest,
    Passthrough,
    ReasoningDelta,
    ReasoningToken,
    RefusalDelta,
    TextDelta,
    ToolArguments,
    ToolCall,
    user_message,
)
from bgmode.backends.chat import ChatBackend, ChatOptions
from bgmode.backends.http import HTTPBackend, UpstreamSettings
from bgmode.backends.responses import ResponsesBackend
from tests.fake_upstream import FakeUpstream, collect

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
HISTORY: list[dict[str, Any]] = [
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Look:"},
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "original"},
        ],
    },
    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "mine"}], "content": []},
    {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
    {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city":"Rome"}'},
    {"type": "function_call_output", "call_id": "call_a", "output": "rain"},
    {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "sun"}]},
]
SCHEMA = {"type": "json_schema", "name": "W", "schema": {"type": "object"}, "strict": True}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
async def make(fake: FakeUpstream) -> AsyncIterator[Any]:
    made: list[HTTPBackend] = []

    def _make(kind: type[HTTPBackend] = ChatBackend, **kw: Any) -> HTTPBackend:
        backend = kind(UpstreamSettings(base_url=fake.base_url, retry_backoff=0.01, max_retries=0), **kw)
        made.append(backend)
        return backend

    yield _make
    for b in made:
        await b.aclose()


def ask(text: str = "hi", **kw: Any) -> ModelRequest:
    return ModelRequest(model="m", input=kw.pop("input", [user_message(text)]), **kw)


# -- chat ---------------------------------------------------------------------------------------


async def test_chat_request_carries_items_tools_and_format(fake: FakeUpstream, make: Any) -> None:
    req = ask(
        input=HISTORY,
        instructions="Be brief.",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        text_format=SCHEMA,
    )
    await collect(make(ChatBackend, options=ChatOptions(accept_files=True)), req)
    body = fake.bodies("/chat/completions")[0]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "auto"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_b", "content": "sun"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "W", "schema": {"type": "object"}, "strict": True},
    }


async def test_chat_allowed_tools_and_json_object(fake: FakeUpstream, make: Any) -> None:
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]}
    await collect(make(), ask(tools=[WEATHER], tool_choice=choice, text_format={"type": "json_object"}))
    body = fake.bodies()[0]
    assert body["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_weather"}}]},
    }
    assert body["response_format"] == {"type": "json_object"}


async def test_chat_streamed_tool_calls_become_function_calls(fake: FakeUpstream, make: Any) -> None:
    fake.plan(
        tool_calls=[
            {"name": "get_weather", "arguments": ['{"ci', 'ty":"P"}']},
            {"name": "get_time", "arguments": ["{}"]},
        ]
    )
    events, err = await collect(make(), ask())
    assert err is None
    assert events[:6] == [
        ToolCall("call_fake_0", "get_weather"),
        ToolArguments('{"ci'),
        ToolArguments('ty":"P"}'),
        ToolCall("call_fake_1", "get_time"),
        ToolArguments("{}"),
        events[5],
    ]
    assert fake.bodies()[0]["messages"][-1]["role"] == "user"


async def test_chat_interleaved_tool_calls_stay_apart(fake: FakeUpstream, make: Any) -> None:
    fake.plan(
        interleave=True,
        tool_calls=[{"name": "a", "arguments": ['{"x":', "1}"]}, {"name": "b", "arguments": ['{"y":', "2}"]}],
    )
    events, err = await collect(make(), ask())
    assert err is None
    calls: dict[str, str] = {}
    current = ""
    for ev in events:
        if isinstance(ev, ToolCall):
            current = ev.name
            calls[current] = ""
        elif isinstance(ev, ToolArguments):
            calls[current] += ev.delta
    assert calls == {"a": '{"x":1}', "b": '{"y":2}'}


async def test_chat_refusal_and_reasoning_fields(fake: FakeUpstream, make: Any) -> None:
    fake.plan(reasoning=["Hm"], reasoning_field="reasoning", text=["Hi"], refusal=["No", "pe"])
    events, _ = await collect(make(), ask())
    assert events[:4] == [ReasoningDelta("Hm"), TextDelta("Hi"), RefusalDelta("No"), RefusalDelta("pe")]


@pytest.mark.parametrize(
    "bad",
    [
        {"index": 0, "function": {"arguments": "{}"}},  # arguments for a call with no name
        {"function": {"name": "f"}},  # no index
        "not an object",
    ],
)
async def test_chat_malformed_tool_call_fails_clearly_keeping_output(fake: FakeUpstream, make: Any, bad: Any) -> None:
    fake.plan(text=["partial"], bad_tool_call=bad)
    events, err = await collect(make(), ask())
    assert events == [TextDelta("partial")]
    assert err is not None and "tool call" in err.message


async def test_chat_tool_results_answered(fake: FakeUpstream, make: Any) -> None:
    fake.plan(tool_calls=[{"name": "get_weather", "arguments": ["{}"]}])
    events, _ = await collect(make(), ask(input=HISTORY[4:]))
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("a tool said rain. a tool said sun.")]


# -- responses ----------------------------------------------------------------------------------


async def test_responses_request_sends_items_and_tools(fake: FakeUpstream, make: Any) -> None:
    theirs = {"type": "reasoning", "id": "rs_up", "summary": [], "encrypted_content": "upstream-token"}
    req = ask(
        input=[*HISTORY, theirs],
        tools=[WEATHER, {"type": "web_search"}],
        tool_choice="required",
        max_tool_calls=3,
        include=["reasoning.encrypted_content"],
        text_format=SCHEMA,
    )
    await collect(make(ResponsesBackend), req)
    body = fake.bodies("/responses")[0]
    types = [it["type"] for it in body["input"]]
    # bgmode's own reasoning item is not sent (the upstream could not look it up); its own is
    assert types == [
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "reasoning",
    ]
    assert body["input"][-1] == theirs
    assert body["input"][0]["content"][1]["type"] == "input_image"
    assert body["tools"] == [WEATHER, {"type": "web_search"}]
    assert body["tool_choice"] == "required" and body["max_tool_calls"] == 3
    assert body["include"] == ["reasoning.encrypted_content"]


async def test_responses_stream_relays_tools_annotations_reasoning(fake: FakeUpstream, make: Any) -> None:
    ann = {"type": "url_citation", "url": "https://e.com", "title": "e", "start_index": 0, "end_index": 2}
    fake.plan(reasoning=["R"], encrypted="tok", hosted=True, annotation=ann, refusal=["no"], text=["Hi"])
    events, err = await collect(make(ResponsesBackend), ask())
    assert err is None
    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["ReasoningDelta", "ReasoningToken", "ItemEnd"]
    assert events[1] == ReasoningToken("tok")
    relayed = [e.event["type"] for e in events if isinstance(e, Passthrough)]
    assert relayed == [
        "response.output_item.added",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.output_item.done",
    ]
    assert TextDelta("Hi") in events and Annotation(ann) in events and RefusalDelta("no") in events


async def test_responses_function_calls_with_and_without_deltas(fake: FakeUpstream, make: Any) -> None:
    fake.plan(
        tool_calls=[
            {"name": "f", "arguments": ['{"a"', ":1}"], "id": "call_1"},
            {"name": "g", "arguments": ["{}"], "id": "call_2", "no_deltas": True},
        ]
    )
    events, _ = await collect(make(ResponsesBackend), ask())
    assert events[:7] == [
        ToolCall("call_1", "f"),
        ToolArguments('{"a"'),
        ToolArguments(":1}"),
        ItemEnd(),
        ToolCall("call_2", "g"),
        ToolArguments("{}"),
        ItemEnd(),
    ]
