"""Reattaching to an upstream's own background response (issue 9): the `responses` backend with
`background = true`, against a real bgmode server as the upstream (simulated model)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bgmode.backends.base import BackendEvent, Checkpoint, Finish, ModelRequest, TextDelta, ToolArguments, user_message
from bgmode.backends.http import UpstreamSettings
from bgmode.backends.responses import ResponsesBackend
from tests.serving import BgmodeServer

SLOW = {"sim_output_tokens": "60", "sim_token_delay_ms": "20"}


@pytest.fixture
async def backend(bgmode_server: BgmodeServer) -> AsyncIterator[ResponsesBackend]:
    b = ResponsesBackend(UpstreamSettings(base_url=bgmode_server.base_url, retry_backoff=0.01), background=True)
    yield b
    await b.aclose()


def _request(text: str = "tell me a story", **kw: Any) -> ModelRequest:
    return ModelRequest(model="sim", input=[user_message(text)], metadata=dict(SLOW), **kw)


def _text(events: list[BackendEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def _upstream(bgmode_server: BgmodeServer, response_id: str) -> dict[str, Any]:
    """The upstream's own stored response."""
    body: dict[str, Any] = httpx.get(f"{bgmode_server.base_url}/responses/{response_id}").json()
    return body


async def test_a_resumed_stream_continues_after_its_checkpoint(
    backend: ResponsesBackend, bgmode_server: BgmodeServer
) -> None:
    request = _request()
    first: list[BackendEvent] = []
    token: dict[str, Any] | None = None
    covered = 0
    stream = backend.stream(request)
    async for ev in stream:
        if isinstance(ev, Checkpoint):
            token, covered = ev.token, len(first)
            if sum(isinstance(e, TextDelta) for e in first) >= 10:
                break  # the process "dies" here: later events were never stored
            continue
        first.append(ev)
    await stream.aclose()
    assert token is not None and token["id"].startswith("resp_")
    # what a worker would have stored: the events the checkpoint covers
    kept = first[:covered]
    rest = [ev async for ev in backend.resume(request, token) if not isinstance(ev, Checkpoint)]
    assert isinstance(rest[-1], Finish)
    upstream = _upstream(bgmode_server, token["id"])
    assert upstream["background"] is True and upstream["status"] == "completed"
    answer = upstream["output"][-1]["content"][0]["text"]
    assert len(answer.split()) == 60
    assert _text(kept) + _text(rest) == answer


async def test_tool_arguments_resume_without_repeats(backend: ResponsesBackend, bgmode_server: BgmodeServer) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    }
    request = _request("get_weather please", tools=[tool], tool_choice="required")
    seen: list[BackendEvent] = []
    token: dict[str, Any] | None = None
    covered = 0
    stream = backend.stream(request)
    async for ev in stream:
        if isinstance(ev, Checkpoint):
            token, covered = ev.token, len(seen)
            if any(isinstance(e, ToolArguments) for e in seen):
                break
            continue
        seen.append(ev)
    await stream.aclose()
    assert token is not None
    rest = [ev async for ev in backend.resume(request, token) if not isinstance(ev, Checkpoint)]
    args = "".join(e.delta for e in seen[:covered] + rest if isinstance(e, ToolArguments))
    call = _upstream(bgmode_server, token["id"])["output"][0]
    assert call["type"] == "function_call" and call["arguments"] == args


async def test_cancel_reaches_the_upstream_response(backend: ResponsesBackend, bgmode_server: BgmodeServer) -> None:
    request = ModelRequest(
        model="sim", input=[user_message("long")], metadata={"sim_output_tokens": "2000", "sim_token_delay_ms": "50"}
    )
    stream = backend.stream(request)
    token = None
    async for ev in stream:
        if isinstance(ev, Checkpoint):
            token = ev.token
            break
    await stream.aclose()
    assert token is not None
    await backend.cancel(token)
    assert _upstream(bgmode_server, token["id"])["status"] == "cancelled"
