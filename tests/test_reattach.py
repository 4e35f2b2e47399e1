"""Reattaching to an upstream's own background response (issue 9): the `responses` backend with
`background = true`, against a real bgmode server as the upstream (simulated model)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from bgmode.backends.base import BackendEvent, Checkpoint, Finish, ModelRequest, TextDelta, ToolArguments, user_message
from bgmode.backends.http import UpstreamSettings
from bgmode.backends.responses import ResponsesBackend
from tests.faulty_proxy import FaultyProxy
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


# -- end to end: bgmode in front of bgmode, SIGKILL mid-stream ------------------------------


def _front(
    make_server: type[BgmodeServer], tmp_path: Path, upstream: BgmodeServer | FaultyProxy, *args: str
) -> BgmodeServer:
    """A bgmode whose every model is the `upstream` bgmode, in background mode there."""
    config = tmp_path / "front.toml"
    config.write_text(
        f'[[route]]\nmodel = "*"\napi = "responses"\nbase_url = "{upstream.base_url}"\n'
        "upstream_background = true\nretry_backoff = 0.05\n"
    )
    return make_server(f"sqlite:///{tmp_path / 'front.db'}", args=["--config", str(config), *args]).start()


def _deltas_until(client: OpenAI, response_id: str, n: int) -> int:
    """Follow the response's stream until `n` text deltas were seen; the last sequence number."""
    seen = 0
    last = -1
    with client.responses.retrieve(response_id, stream=True) as stream:
        for event in stream:
            last = event.sequence_number
            if event.type == "response.output_text.delta":
                seen += 1
                if seen >= n:
                    break
    return last


def _create(client: OpenAI, tokens: int, delay_ms: int) -> str:
    """A background response of `tokens` simulated words at `delay_ms` each, on the upstream."""
    created = client.responses.create(
        model="sim",
        input="tell me everything",
        background=True,
        metadata={"sim_output_tokens": str(tokens), "sim_token_delay_ms": str(delay_ms)},
    )
    return created.id


def _assert_whole(client: OpenAI, upstream: BgmodeServer, response_id: str) -> None:
    """The front's response completed with exactly the upstream's text: its whole event log
    0..n, and its deltas spell that text once (nothing lost, nothing repeated)."""
    events = list(client.responses.retrieve(response_id, stream=True))
    final = client.responses.retrieve(response_id)
    assert final.status == "completed", final.error
    answer = _upstream(upstream, _upstream_id(upstream))["output"][-1]["content"][0]["text"]
    assert final.output_text == answer
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == answer


def test_a_crashed_front_reattaches_to_the_upstream_response(make_server: type[BgmodeServer], tmp_path: Path) -> None:
    upstream = make_server().start()
    front = _front(make_server, tmp_path, upstream)
    client = OpenAI(base_url=front.base_url, api_key="k", max_retries=0)
    rid = _create(client, 120, 25)
    _deltas_until(client, rid, 10)
    front.kill()  # SIGKILL mid-stream: the upstream response goes on without it
    front.start()  # same host, the old pid is gone: the new process takes the response over at once
    _assert_whole(client, upstream, rid)


def test_cancel_reaches_the_upstream_background_response(make_server: type[BgmodeServer], tmp_path: Path) -> None:
    upstream = make_server().start()
    front = _front(make_server, tmp_path, upstream)
    client = OpenAI(base_url=front.base_url, api_key="k", max_retries=0)
    rid = _create(client, 5000, 20)
    _deltas_until(client, rid, 3)
    assert client.responses.cancel(rid).status == "cancelled"
    upstream_id = _upstream_id(upstream)
    deadline = time.monotonic() + 30
    while _upstream(upstream, upstream_id)["status"] != "cancelled":
        assert time.monotonic() < deadline, "the upstream response was never cancelled"
        time.sleep(0.05)  # polling the upstream for the outcome


def _upstream_id(upstream: BgmodeServer) -> str:
    """The one response the front made on its own upstream (listed by bgmode's extension)."""
    listing = httpx.get(f"{upstream.base_url}/responses").json()
    assert len(listing["data"]) == 1, listing
    assert listing["data"][0]["background"] is True
    return str(listing["data"][0]["id"])


def test_a_broken_upstream_stream_is_followed_again_after_the_last_event(
    make_server: type[BgmodeServer], tmp_path: Path
) -> None:
    upstream = make_server().start()
    with FaultyProxy(upstream.url) as proxy:
        proxy.cut_streams(2, after_events=15, mode="abort")  # the front's create, then its first reattach
        front = _front(make_server, tmp_path, proxy)
        client = OpenAI(base_url=front.base_url, api_key="k", max_retries=0)
        _assert_whole(client, upstream, _create(client, 80, 10))
        resumes = [r.query for r in proxy.matching("GET", "/v1/responses/resp_")]
    assert len(resumes) == 2 and all(q["stream"] == ["true"] and int(q["starting_after"][0]) > 0 for q in resumes)


def test_a_graceful_restart_leaves_the_response_to_the_next_process(
    make_server: type[BgmodeServer], tmp_path: Path
) -> None:
    upstream = make_server().start()
    front = _front(make_server, tmp_path, upstream, "--grace-seconds", "0.2")
    client = OpenAI(base_url=front.base_url, api_key="k", max_retries=0)
    rid = _create(client, 150, 25)
    _deltas_until(client, rid, 5)
    assert front.terminate() in (0, -15)  # SIGTERM; the grace is far too short for this response
    assert client.with_options(base_url=upstream.base_url).responses.retrieve(_upstream_id(upstream)).status in (
        "queued",
        "in_progress",
    )  # the upstream goes on meanwhile
    front.start()
    _assert_whole(client, upstream, rid)
