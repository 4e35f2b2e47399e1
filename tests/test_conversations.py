"""The Conversations API and `conversation` on `responses.create`, against `bgmode serve`, with
the official openai SDK (`client.conversations.*`) and the Agents SDK's conversation support.

The simulated model tells what it saw: "I see 1 image." when an image is anywhere in its
context, and it quotes a tool's output only when the matching `function_call` is in it.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, OpenAIConversationsSession, OpenAIResponsesModel, Runner
from openai import AsyncOpenAI, OpenAI

from tests.serving import BgmodeServer
from tests.test_agents_sdk import get_time, get_weather

pytest_plugins = ("tests.pg",)

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
IMAGE_MSG = {
    "role": "user",
    "content": [{"type": "input_text", "text": "look"}, {"type": "input_image", "image_url": PNG}],
}


def texts(client: OpenAI, cid: str) -> list[tuple[str, str]]:
    out = []
    for it in client.conversations.items.list(cid, order="asc", limit=100):
        d: dict[str, Any] = it.to_dict()
        text = "".join(p.get("text", "") for p in d.get("content", ()) if isinstance(p, dict))
        out.append((d.get("role") or d["type"], text))
    return out


def wait_done(client: OpenAI, rid: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        status = client.responses.retrieve(rid).status
        assert status is not None
        if status in ("completed", "failed", "cancelled", "incomplete"):
            return status
        assert time.monotonic() < deadline
        time.sleep(0.02)  # polling a status, bounded


# -- the Conversations API ----------------------------------------------------------------------


def test_conversation_crud_and_items(client: OpenAI) -> None:
    empty = client.conversations.create(items=[])  # the Agents SDK's first call
    assert empty.object == "conversation" and empty.id.startswith("conv_") and empty.metadata == {}
    conv = client.conversations.create(
        items=[{"role": "user", "content": f"m{i}"} for i in range(5)], metadata={"topic": "otters"}
    )
    assert client.conversations.retrieve(conv.id).metadata == {"topic": "otters"}
    assert client.conversations.update(conv.id, metadata={"topic": "seals"}).metadata == {"topic": "seals"}

    page = client.conversations.items.list(conv.id, limit=2)  # default order: desc
    assert [i.content[0].text for i in page.data] == ["m4", "m3"]  # type: ignore[union-attr]
    assert page.has_more and page.last_id == page.data[-1].id
    every = [i.content[0].text for i in client.conversations.items.list(conv.id, limit=2, order="asc")]  # type: ignore[union-attr]
    assert every == [f"m{i}" for i in range(5)]  # the SDK pages with `after`

    added = client.conversations.items.create(
        conv.id,
        items=[
            {"type": "message", "role": "assistant", "content": "ok"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
    )
    assert [i.type for i in added.data] == ["message", "function_call", "function_call_output"]
    assert all(i.id and i.status == "completed" for i in added.data)  # type: ignore[union-attr]
    one = client.conversations.items.retrieve(
        added.data[1].id, conversation_id=conv.id, include=["reasoning.encrypted_content"]
    )
    assert one.type == "function_call" and one.name == "get_weather"  # type: ignore[union-attr]
    after_delete = client.conversations.items.delete(added.data[0].id, conversation_id=conv.id)
    assert after_delete.id == conv.id and after_delete.object == "conversation"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)

    deleted = client.conversations.delete(conv.id)
    assert deleted.deleted and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(conv.id)


@pytest.mark.parametrize(
    ("call", "param", "code"),
    [
        (
            lambda c, cid: c.conversations.create(items=[{"role": "user", "content": "x"}] * 21),
            "items",
            "array_above_max_length",
        ),
        (
            lambda c, cid: c.conversations.create(items=[{"role": "nobody", "content": "x"}]),
            "items[0].role",
            "invalid_value",
        ),
        (lambda c, cid: c.conversations.create(metadata={"k": "v" * 513}), "metadata.k", "string_above_max_length"),
        (lambda c, cid: c.conversations.create(extra_body={"nope": 1}), "nope", "unknown_parameter"),
        (
            lambda c, cid: c.conversations.items.create(cid, items=None),  # type: ignore[arg-type]
            "items",
            "missing_required_parameter",
        ),
        (lambda c, cid: c.conversations.items.list(cid, include=["bogus"]), "include[0]", "invalid_value"),  # type: ignore[list-item]
        (lambda c, cid: c.conversations.items.list(cid, limit=101), "limit", "invalid_value"),
        (lambda c, cid: c.conversations.items.list(cid, after="msg_nope"), "after", None),
    ],
)
def test_conversation_errors_name_the_param(client: OpenAI, call: Any, param: str, code: str | None) -> None:
    cid = client.conversations.create().id
    with pytest.raises(openai.BadRequestError) as err:
        call(client, cid)
    assert err.value.param == param and err.value.code == code


def test_conversations_belong_to_their_api_key(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--api-keys", "ka:alice,kb:bob"]).start()
    alice = OpenAI(base_url=server.base_url, api_key="ka", max_retries=0)
    bob = OpenAI(base_url=server.base_url, api_key="kb", max_retries=0)
    conv = alice.conversations.create(items=[{"role": "user", "content": "secret"}])
    item = alice.conversations.items.list(conv.id).data[0]
    for call in (
        lambda: bob.conversations.retrieve(conv.id),
        lambda: bob.conversations.update(conv.id, metadata={}),
        lambda: bob.conversations.items.list(conv.id),
        lambda: bob.conversations.items.create(conv.id, items=[{"role": "user", "content": "x"}]),
        lambda: bob.conversations.items.retrieve(item.id, conversation_id=conv.id),
        lambda: bob.conversations.items.delete(item.id, conversation_id=conv.id),
        lambda: bob.conversations.delete(conv.id),
        lambda: bob.responses.create(model="m", input="x", conversation=conv.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert texts(alice, conv.id) == [("user", "secret")]


# -- conversation on responses.create ----------------------------------------------------------


@pytest.mark.parametrize("background", [False, True])
def test_turns_see_the_conversation_and_are_appended(client: OpenAI, background: bool) -> None:
    conv = client.conversations.create(items=[IMAGE_MSG])  # type: ignore[list-item]
    first = client.responses.create(
        model="m", input="what did I show you?", conversation=conv.id, background=background
    )
    assert first.conversation is not None and first.conversation.id == conv.id
    if background:
        assert wait_done(client, first.id) == "completed"
        first = client.responses.retrieve(first.id)
    assert first.output_text.startswith("I see 1 image.")  # the conversation was the context
    second = client.responses.create(model="m", input="and now?", conversation={"id": conv.id}, background=background)
    if background:
        wait_done(client, second.id)
        second = client.responses.retrieve(second.id)
    assert second.output_text.startswith("I see 1 image.")
    assert [role for role, _ in texts(client, conv.id)] == ["user", "user", "assistant", "user", "assistant"]
    assert texts(client, conv.id)[2][1] == first.output_text


def test_a_streamed_background_turn_is_appended_with_its_terminal_event(client: OpenAI) -> None:
    conv = client.conversations.create()
    with client.responses.create(
        model="m", input="hello", conversation=conv.id, background=True, stream=True
    ) as stream:
        events = list(stream)
    assert events[-1].type == "response.completed"
    text = events[-1].response.output_text  # type: ignore[union-attr]
    # once the terminal event is out, the turn is in the conversation (same transaction)
    assert texts(client, conv.id) == [("user", "hello"), ("assistant", text)]


def test_tool_calls_across_calls_of_one_turn(client: OpenAI) -> None:
    conv = client.conversations.create()
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    calls = client.responses.create(model="m", input="get_weather please", tools=[tool], conversation=conv.id)  # type: ignore[list-item]
    call = calls.output[0]
    assert call.type == "function_call"
    # only the tool's output is sent: the call itself comes from the conversation
    answer = client.responses.create(
        model="m",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[tool],  # type: ignore[list-item]
        conversation=conv.id,
    )
    assert answer.output_text == 'get_weather returned "sunny".'
    kinds = [it.type for it in client.conversations.items.list(conv.id, order="asc")]
    assert kinds == ["message", "function_call", "function_call_output", "message"]


def test_one_turn_at_a_time_and_failed_or_cancelled_turns_append_nothing(client: OpenAI) -> None:
    conv = client.conversations.create(items=[{"role": "user", "content": "before"}])
    slow = {"sim_output_tokens": "10000", "sim_token_delay_ms": "20"}
    running = client.responses.create(model="m", input="long", conversation=conv.id, background=True, metadata=slow)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="m", input="second", conversation=conv.id)
    assert err.value.code == "conversation_locked" and err.value.param == "conversation"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m", input="second", conversation=conv.id, background=True)
    assert client.responses.cancel(running.id).status == "cancelled"
    failing = client.responses.create(
        model="m", input="fails", conversation=conv.id, metadata={"sim_fail_after_tokens": "2"}
    )
    assert failing.status == "failed"
    assert texts(client, conv.id) == [("user", "before")]  # neither turn was appended
    ok = client.responses.create(model="m", input="third", conversation=conv.id)
    assert ok.status == "completed"
    assert [t for _, t in texts(client, conv.id)] == ["before", "third", ok.output_text]


def test_store_false_reads_the_conversation_and_appends_nothing(client: OpenAI) -> None:
    conv = client.conversations.create(items=[IMAGE_MSG])  # type: ignore[list-item]
    r = client.responses.create(model="m", input="x", conversation=conv.id, store=False)
    assert r.output_text.startswith("I see 1 image.")
    assert len(texts(client, conv.id)) == 1


def test_conversation_errors_on_create(client: OpenAI) -> None:
    prev = client.responses.create(model="m", input="x")
    conv = client.conversations.create()
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="m", input="x", conversation=conv.id, previous_response_id=prev.id)
    assert err.value.code == "mutually_exclusive_parameters" and err.value.param is None
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", input="x", conversation="conv_nope")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="m", input="x", conversation=7)  # type: ignore[arg-type]
    assert err.value.param == "conversation"


# -- the Agents SDK ----------------------------------------------------------------------------


def agent_for(server: BgmodeServer) -> tuple[Agent, AsyncOpenAI]:
    client = AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    agent = Agent(
        name="assistant",
        instructions="Answer with the tools.",
        tools=[get_weather, get_time],
        model=OpenAIResponsesModel(model="sim-agent", openai_client=client),
    )
    return agent, client


async def test_openai_conversations_session_multi_turn(bgmode_server: BgmodeServer) -> None:
    agent, client = agent_for(bgmode_server)
    session = OpenAIConversationsSession(openai_client=client)
    first = await Runner.run(agent, [IMAGE_MSG], session=session)  # type: ignore[list-item]
    assert first.final_output.startswith("I see 1 image.")
    second = await Runner.run(agent, "get_weather for Oslo", session=session)
    assert second.final_output == 'get_weather returned "sunny in example city".'
    third = await Runner.run(agent, "thanks", session=session)
    assert third.final_output.startswith("I see 1 image.")  # the history came back from bgmode
    items = await session.get_items()
    kinds = [i.get("type", "message") for i in items]  # type: ignore[union-attr]
    assert kinds.count("function_call") == 1 and kinds.count("function_call_output") == 1
    popped = await session.pop_item()
    assert popped is not None and len(await session.get_items()) == len(items) - 1
    await session.clear_session()


async def test_runner_with_conversation_id(bgmode_server: BgmodeServer) -> None:
    agent, client = agent_for(bgmode_server)
    conv = await client.conversations.create(items=[IMAGE_MSG])  # type: ignore[list-item]
    first = await Runner.run(agent, "get_weather for Oslo", conversation_id=conv.id)
    # the second model call sent only the tool's output: its call came from the conversation
    assert first.final_output == 'get_weather returned "sunny in example city".'
    last_input = [it.type async for it in client.responses.input_items.list(first.last_response_id or "")]
    assert last_input == ["function_call_output"]
    second = await Runner.run(agent, "and get_time", conversation_id=conv.id)
    assert second.final_output == 'get_time returned "09:00 in example city".'
    third = await Runner.run(agent, "thanks", conversation_id=conv.id)
    assert third.final_output.startswith("I see 1 image.")  # every earlier turn is the context
    kinds = [it.type async for it in client.conversations.items.list(conv.id, order="asc")]
    assert kinds.count("function_call") == 2 and kinds.count("function_call_output") == 2
    assert kinds[0] == "message" and kinds[-1] == "message"


# -- many processes on PostgreSQL --------------------------------------------------------------


@pytest.mark.postgres
def test_turns_across_two_servers_on_postgres(pg_database_url: str, make_server: type[BgmodeServer]) -> None:
    a = make_server(pg_database_url, args=["--workers", "2"]).start()
    b = make_server(pg_database_url, args=["--workers", "2"]).start()
    ca = OpenAI(base_url=a.base_url, api_key="x", max_retries=0)
    cb = OpenAI(base_url=b.base_url, api_key="x", max_retries=0)
    conv = ca.conversations.create(items=[IMAGE_MSG])  # type: ignore[list-item]
    for i in range(3):
        creator, follower = (ca, cb) if i % 2 else (cb, ca)
        r = creator.responses.create(model="m", input=f"turn {i}", conversation=conv.id, background=True)
        with follower.responses.retrieve(r.id, stream=True) as stream:
            last = list(stream)[-1]
        assert last.type == "response.completed"
        assert last.response.output_text.startswith("I see 1 image.")  # type: ignore[union-attr]
    got = texts(cb, conv.id)
    assert [t for role, t in got if role == "user"] == ["look", "turn 0", "turn 1", "turn 2"]
    assert [role for role, _ in got] == ["user"] + ["user", "assistant"] * 3
    assert texts(ca, conv.id) == got
    r = httpx.get(f"{a.base_url}/conversations/{conv.id}/items?order=asc&limit=1")
    assert r.status_code == 200 and r.json()["has_more"] is True


def test_a_streamed_foreground_turn_is_appended(client: OpenAI) -> None:
    conv = client.conversations.create(items=[IMAGE_MSG])  # type: ignore[list-item]
    with client.responses.create(model="m", input="hi", conversation=conv.id, stream=True) as stream:
        final = [e for e in stream if e.type == "response.completed"][0].response
    assert final.output_text.startswith("I see 1 image.") and final.conversation is not None
    assert [role for role, _ in texts(client, conv.id)] == ["user", "user", "assistant"]
