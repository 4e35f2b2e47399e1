"""The OpenAI Agents SDK (`openai-agents`, unmodified) runs tool-using agents against `bgmode serve`.

The model is bgmode's simulated one (a test double): it calls each tool whose name appears in
the newest user text, then answers quoting the tools' outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    SQLiteSession,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from openai.types.shared import Reasoning

from tests.serving import BgmodeServer

set_tracing_disabled(True)


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@function_tool
def get_time(city: str) -> str:
    """The local time in a city."""
    return f"09:00 in {city}"


EXPECTED = 'get_weather returned "sunny in example city". get_time returned "09:00 in example city".'


def make_agent(server: BgmodeServer, reasoning: bool = False) -> Agent:
    client = AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    settings = ModelSettings(reasoning=Reasoning(effort="low", summary="auto")) if reasoning else ModelSettings()
    return Agent(
        name="assistant",
        instructions="Answer with the tools.",
        tools=[get_weather, get_time],
        model=OpenAIResponsesModel(model="sim-agent", openai_client=client),
        model_settings=settings,
    )


@pytest.mark.parametrize("reasoning", [False, True])
async def test_runner_run_calls_both_tools_to_final_output(bgmode_server: BgmodeServer, reasoning: bool) -> None:
    result = await Runner.run(make_agent(bgmode_server, reasoning), "Use get_weather and get_time for Paris.")
    assert result.final_output == EXPECTED
    kinds = [item.type for item in result.new_items]
    assert kinds.count("tool_call_item") == 2 and kinds.count("tool_call_output_item") == 2
    if reasoning:
        assert "reasoning_item" in kinds


async def test_runner_run_streamed(bgmode_server: BgmodeServer) -> None:
    result = Runner.run_streamed(make_agent(bgmode_server, True), "get_weather and get_time, please")
    names = []
    async for ev in result.stream_events():
        if ev.type == "run_item_stream_event" and ev.name == "tool_called":
            names.append(ev.item.raw_item.name)  # type: ignore[union-attr]
    assert names == ["get_weather", "get_time"]
    assert result.final_output == EXPECTED


async def test_sqlite_session_history_with_reasoning_and_tool_items(
    bgmode_server: BgmodeServer, tmp_path: Path
) -> None:
    session = SQLiteSession("conversation", str(tmp_path / "agent.db"))
    agent = make_agent(bgmode_server, True)
    first = await Runner.run(agent, "get_weather for Oslo", session=session)
    assert first.final_output == 'get_weather returned "sunny in example city".'
    # the second turn sends the whole history back: reasoning, function_call and output items
    second = await Runner.run(agent, "and now get_time", session=session)
    assert second.final_output == 'get_time returned "09:00 in example city".'
    stored = await session.get_items()
    types = [i.get("type", "message") for i in stored]  # type: ignore[union-attr]
    assert types.count("function_call") == 2 and types.count("reasoning") >= 2


def test_agent_through_a_chat_upstream(make_server: type[BgmodeServer]) -> None:
    """The same agent, served by bgmode in front of a Chat Completions upstream (the fake one,
    which calls both tools, then answers quoting their results)."""
    from tests.fake_upstream import FakeUpstream

    with FakeUpstream() as fake:
        fake.plan(
            tool_calls=[
                {"name": "get_weather", "arguments": ['{"city":', '"Paris"}']},
                {"name": "get_time", "arguments": ['{"city":"Paris"}']},
            ]
        )
        server = make_server(args=["--upstream-url", fake.base_url]).start()
        result = Runner.run_sync(make_agent(server, reasoning=True), "Use get_weather and get_time for Paris.")
        assert result.final_output == "a tool said sunny in Paris. a tool said 09:00 in Paris."
        first, second = fake.bodies("/chat/completions")
        assert [t["function"]["name"] for t in first["tools"]] == ["get_weather", "get_time"]
        assert [m["role"] for m in second["messages"]][-3:] == ["assistant", "tool", "tool"]
        assert second["messages"][-3]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'
