"""LangChain's `ChatOpenAI(use_responses_api=True)`, unmodified, against `bgmode serve`: tools bound
with `bind_tools`, the tool results sent back in the message history, and `with_structured_output`.
The model is bgmode's simulated one (a test double)."""

from __future__ import annotations

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.serving import BgmodeServer


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Forecast(BaseModel):
    city: str
    high_c: int


def chat(server: BgmodeServer, **kw: object) -> ChatOpenAI:
    return ChatOpenAI(
        model="sim",
        base_url=server.base_url,
        api_key="k",
        use_responses_api=True,
        max_retries=0,
        **kw,  # type: ignore[arg-type]
    )


def test_bind_tools_and_history_round_trip(bgmode_server: BgmodeServer) -> None:
    llm = chat(bgmode_server, reasoning={"effort": "low", "summary": "auto"}).bind_tools([get_weather])
    history: list = [HumanMessage("What does get_weather say for Lima?")]
    ai = llm.invoke(history)
    assert [c["name"] for c in ai.tool_calls] == ["get_weather"]  # type: ignore[attr-defined]
    call = ai.tool_calls[0]  # type: ignore[attr-defined]
    history += [ai, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = llm.invoke(history)  # reasoning and function_call items go back to bgmode
    assert final.text == 'get_weather returned "sunny in example city".'


def test_with_structured_output(bgmode_server: BgmodeServer) -> None:
    got = chat(bgmode_server).with_structured_output(Forecast).invoke("Forecast for Lima")
    assert isinstance(got, Forecast) and got.city
