"""Beyond plain text, over HTTP with the official openai SDK: function tools and the agent loop,
reasoning items given back, structured output, images and files, and the cancelled stream's end.
The model is the simulated one (a test double that calls tools deterministically)."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.sdk import TERMINAL, check_log, replay
from tests.serving import BgmodeServer

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME = {
    "type": "function",
    "name": "get_time",
    "description": "The local time in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "hours": {"type": "integer", "minimum": 0, "maximum": 23}},
        "required": ["city", "hours"],
        "additionalProperties": False,
    },
    "strict": True,
}
TOOLS: list[Any] = [WEATHER, TIME]


def calls(r: Any) -> list[Any]:
    return [o for o in r.output if o.type == "function_call"]


def bad_request(fn: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as e:
        fn()
    err = e.value.body
    assert isinstance(err, dict)
    return err


# -- function tools -----------------------------------------------------------------------------


def test_auto_calls_each_named_tool_with_arguments_valid_for_its_schema(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="Use get_weather and get_time for Paris.", tools=TOOLS)
    assert r.status == "completed"
    got = calls(r)
    assert [c.name for c in got] == ["get_weather", "get_time"]
    for c, tool in zip(got, TOOLS, strict=True):
        assert c.call_id.startswith("call_") and c.id and c.id.startswith("fc_")
        assert c.status == "completed"
        jsonschema.validate(__import__("json").loads(c.arguments), tool["parameters"])
    assert r.output_text == ""
    assert r.tools[0].name == "get_weather" and r.tool_choice == "auto" and r.parallel_tool_calls is True


def test_tool_choice_forms(client: OpenAI) -> None:
    named = client.responses.create(
        model="m", input="no tool named here", tools=TOOLS, tool_choice={"type": "function", "name": "get_time"}
    )
    assert [c.name for c in calls(named)] == ["get_time"]
    assert named.tool_choice.type == "function"  # type: ignore[union-attr]
    required = client.responses.create(model="m", input="anything", tools=TOOLS, tool_choice="required")
    assert [c.name for c in calls(required)] == ["get_weather"]
    none = client.responses.create(model="m", input="get_weather please", tools=TOOLS, tool_choice="none")
    assert calls(none) == [] and none.output_text
    one = client.responses.create(model="m", input="get_weather and get_time", tools=TOOLS, parallel_tool_calls=False)
    assert [c.name for c in calls(one)] == ["get_weather"] and one.parallel_tool_calls is False
    allowed = client.responses.create(
        model="m",
        input="anything",
        tools=TOOLS,
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]},
    )
    assert [c.name for c in calls(allowed)] == ["get_time"]
    capped = client.responses.create(model="m", input="get_weather and get_time", tools=TOOLS, max_tool_calls=1)
    assert len(calls(capped)) == 1 and capped.max_tool_calls == 1
    chat_shape = client.responses.create(
        model="m",
        input="get_weather",
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["parameters"]}}],  # type: ignore[list-item]
    )
    assert [c.name for c in calls(chat_shape)] == ["get_weather"]


def test_agent_loop_with_previous_response_id_and_with_whole_history(client: OpenAI) -> None:
    first = client.responses.create(
        model="m", input="get_weather in Oslo", tools=TOOLS, reasoning={"effort": "low", "summary": "auto"}
    )
    (call,) = calls(first)
    assert first.output[0].type == "reasoning"
    out = [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}]
    # 1. previous_response_id + function_call_output
    second = client.responses.create(model="m", previous_response_id=first.id, input=out, tools=TOOLS)  # type: ignore[arg-type]
    assert second.status == "completed"
    assert second.output_text == 'get_weather returned "sunny, 21C".'
    # 2. the whole history sent back, reasoning and function_call items as bgmode produced them
    history: list[Any] = [{"role": "user", "content": "get_weather in Oslo"}]
    history += [o.model_dump(exclude_none=True) for o in first.output]
    history += [{"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}]
    third = client.responses.create(model="m", input=history, tools=TOOLS)
    assert third.output_text == 'get_weather returned "rainy".'
    items = client.responses.input_items.list(third.id, order="asc").data
    assert [i.type for i in items] == ["message", "reasoning", "function_call", "function_call_output"]


def test_background_tool_call_resumed_mid_arguments(client: OpenAI) -> None:
    stream = client.responses.create(
        model="m",
        input="get_weather",
        tools=TOOLS,
        background=True,
        stream=True,
        metadata={"sim_token_delay_ms": "20"},
    )
    seen: list[Any] = []
    for ev in stream:
        seen.append(ev)
        if ev.type == "response.function_call_arguments.delta":
            break
    stream.close()  # the connection drops mid-arguments
    rid = seen[0].response.id
    rest = replay(client, rid, after=seen[-1].sequence_number)
    assert rest[0].sequence_number == seen[-1].sequence_number + 1
    events = seen + rest
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == args and done.name == "get_weather"  # type: ignore[attr-defined]
    final = client.responses.retrieve(rid)
    assert final.status == "completed" and calls(final)[0].arguments == args
    status, _ = check_log(client, rid)
    assert status == "completed"


def test_tool_calling_chain_continues_across_restart(make_server: type[BgmodeServer]) -> None:
    server = make_server().start()
    c = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    first = c.responses.create(model="m", input="get_time", tools=TOOLS, background=True)
    with c.responses.retrieve(first.id, stream=True) as s:
        list(s)
    server.restart()
    (call,) = calls(c.responses.retrieve(first.id))
    nxt = c.responses.create(
        model="m",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "09:00"}],
        background=True,
    )
    with c.responses.retrieve(nxt.id, stream=True) as s:
        list(s)
    assert c.responses.retrieve(nxt.id).output_text == 'get_time returned "09:00".'


def test_tool_validation_errors_name_the_param(client: OpenAI) -> None:
    def create(**kw: Any) -> Any:
        return lambda: client.responses.create(model="m", input="x", **kw)

    cases = [
        (create(tools=[{"type": "function", "name": "bad name"}]), "tools[0].name"),
        (create(tools=[WEATHER, WEATHER]), "tools[1].name"),
        (create(tools=[{"type": "function", "name": "f", "parameters": {"type": "nope"}}]), "tools[0].parameters"),
        (create(tools=[{"type": "teleport"}]), "tools[0].type"),
        (create(tools=[{"type": "web_search"}]), "tools[0].type"),
        (create(tools=TOOLS, tool_choice={"type": "function", "name": "missing"}), "tool_choice.name"),
        (create(tool_choice="sometimes"), "tool_choice"),
        (create(tool_choice="required"), "tool_choice"),
        (create(max_tool_calls=0), "max_tool_calls"),
        (create(include=["reasoning.everything"]), "include[0]"),
        (
            create(text={"format": {"type": "json_schema", "name": "x", "schema": {"type": 5}}}),
            "text.format.schema",
        ),
        (create(text={"format": {"type": "json_schema", "schema": {}}}), "text.format.name"),
    ]
    for fn, param in cases:
        err = bad_request(fn)
        assert err["param"] == param, err
        assert err["type"] == "invalid_request_error" and err["message"]


def test_input_item_validation_errors_name_the_param(client: OpenAI) -> None:
    def create(item: Any) -> Any:
        return lambda: client.responses.create(model="m", input=[item])

    cases = [
        ({"type": "function_call_output", "output": "x"}, "input[0].call_id"),
        ({"type": "function_call", "call_id": "c", "arguments": "{}"}, "input[0].name"),
        ({"type": "item_reference", "id": "msg_1"}, "input[0].type"),
        ({"type": "nonsense"}, "input[0].type"),
        ({"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}, "input[0].content[0].file_id"),
        (
            {"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]},
            "input[0].content[0].image_url",
        ),
        ({"role": "user", "content": [{"type": "input_file"}]}, "input[0].content[0].file_data"),
        (
            {"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]},
            "input[0].content[0].type",
        ),
    ]
    for item, param in cases:
        err = bad_request(create(item))
        assert err["param"] == param, err


# -- reasoning items ----------------------------------------------------------------------------


def test_reasoning_item_events_and_encrypted_content_round_trip(client: OpenAI) -> None:
    with client.responses.stream(
        model="m",
        input="think",
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        store=False,
    ) as s:
        types = [e.type for e in s]
        r = s.get_final_response()
    assert types.index("response.reasoning_summary_part.added") < types.index("response.reasoning_summary_text.delta")
    assert types.index("response.content_part.added") < types.index("response.reasoning_text.delta")
    rs = r.output[0]
    assert rs.type == "reasoning" and rs.summary[0].text == "Planning how to answer the request."
    assert rs.encrypted_content and rs.encrypted_content.startswith("bgm1:")
    back = rs.model_dump(exclude_none=True)
    # stateless: the sealed item comes back and is accepted
    ok = client.responses.create(model="m", input=[back, {"role": "user", "content": "go on"}], store=False)
    assert ok.status == "completed"
    # a token this server did not make is refused, naming the item
    forged = {**back, "encrypted_content": back["encrypted_content"][:-8] + "AAAAAAAA"}
    err = bad_request(lambda: client.responses.create(model="m", input=[forged], store=False))
    assert err["param"] == "input[0].encrypted_content" and err["code"] == "invalid_encrypted_content"


# -- structured output --------------------------------------------------------------------------


class Weather(BaseModel):
    city: str
    temperature_c: float
    conditions: list[str]


def test_parse_with_text_format_model(client: OpenAI) -> None:
    parsed = client.responses.parse(model="m", input="Weather in Rome as JSON", text_format=Weather)
    assert isinstance(parsed.output_parsed, Weather)
    assert parsed.output_parsed.conditions
    bg = client.responses.create(
        model="m",
        input="json please",
        text={"format": {"type": "json_object"}},
        background=True,
    )
    with client.responses.retrieve(bg.id, stream=True) as s:
        list(s)
    text = client.responses.retrieve(bg.id).output_text
    assert isinstance(__import__("json").loads(text), dict)


def test_parse_tool_arguments_and_results(client: OpenAI) -> None:
    r = client.responses.parse(model="m", input="get_weather now", tools=TOOLS)  # type: ignore[arg-type]
    (call,) = [o for o in r.output if o.type == "function_call"]
    assert call.parsed_arguments == __import__("json").loads(call.arguments)  # type: ignore[union-attr]


# -- images and files ---------------------------------------------------------------------------


def test_images_and_files_are_accepted(client: OpenAI) -> None:
    png = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
    pdf = "data:application/pdf;base64," + base64.b64encode(b"%PDF fake").decode()
    r = client.responses.create(
        model="m",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in these?"},
                    {"type": "input_image", "image_url": png, "detail": "low"},
                    {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
                    {"type": "input_file", "file_data": pdf, "filename": "a.pdf"},
                ],
            }
        ],
    )
    assert r.output_text.startswith("I see 2 images and 1 file.")
    items = client.responses.input_items.list(r.id).data
    parts = items[0].content  # type: ignore[union-attr]
    assert [p.type for p in parts] == ["input_text", "input_image", "input_image", "input_file"]


# -- refusals and the cancelled stream -----------------------------------------------------------


def test_refusal_part(client: OpenAI) -> None:
    with client.responses.stream(model="m", input="x", metadata={"sim_refusal": "I can't help with that."}) as s:
        types = [e.type for e in s]
        r = s.get_final_response()
    assert "response.refusal.delta" in types and "response.refusal.done" in types
    part = r.output[0].content[0]  # type: ignore[union-attr]
    assert part.type == "refusal" and part.refusal == "I can't help with that."


def test_cancelled_stream_read_by_the_stream_helper(client: OpenAI) -> None:
    r = client.responses.create(
        model="m", input="long", background=True, metadata={"sim_output_tokens": "2000", "sim_token_delay_ms": "10"}
    )
    with client.responses.stream(response_id=r.id) as s:
        for ev in s:
            if ev.type == "response.output_text.delta":
                assert client.responses.cancel(r.id).status == "cancelled"
                break
        rest = list(s)
        assert rest[-1].type == "response.failed"
        assert rest[-1].response.status == "cancelled"  # type: ignore[union-attr]
        with pytest.raises(RuntimeError, match="response.completed"):
            s.get_final_response()
    assert client.responses.retrieve(r.id).status in TERMINAL
