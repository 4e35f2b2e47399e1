"""`bgmode mcp` driven by the MCP SDK's own client over stdio, against a real `bgmode serve`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from bgmode.client.ledger import Ledger
from tests.serving import BgmodeServer

FAST = {"sim_output_tokens": "30", "sim_token_delay_ms": "2"}
#: several seconds: long enough to cancel it, or to restart the server under it
SLOW = {"sim_output_tokens": "200", "sim_token_delay_ms": "25"}
TOOLS = {"start_background_response", "get_response", "wait_for_response", "cancel_response", "list_jobs"}


@asynccontextmanager
async def mcp_session(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "bgmode", "mcp", *args],
        env={"BGMODE_LEDGER_PATH": os.environ["BGMODE_LEDGER_PATH"], **(env or {})},
    )
    async with Client(params, read_timeout_seconds=90) as client:
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return " ".join(getattr(c, "text", "") for c in result.content)


async def wait_done(client: Client, rid: str) -> tuple[dict[str, Any], str]:
    """wait_for_response until done, gathering the new text with the cursor."""
    cursor = 0
    text = ""
    while True:
        out = await call(client, "wait_for_response", response_id=rid, cursor=cursor, timeout_seconds=20)
        assert out["cursor"] == cursor + len(out["new_text"])
        text += out["new_text"]
        cursor = out["cursor"]
        if out["done"] and not out["more_text"]:
            return out, text


async def test_start_wait_get_list(bgmode_server: BgmodeServer) -> None:
    async with mcp_session("--base-url", bgmode_server.base_url) as client:
        listed = await client.list_tools()
        assert {t.name for t in listed.tools} == TOOLS
        for tool in listed.tools:
            assert tool.description and tool.input_schema["type"] == "object"
        start_schema = next(t for t in listed.tools if t.name == "start_background_response").input_schema
        assert {"prompt", "messages", "model", "reasoning_effort", "verbosity", "instructions"} <= set(
            start_schema["properties"]
        )

        started = await call(
            client, "start_background_response", prompt="Write about otters.", model="m1", metadata=FAST
        )
        rid = started["response_id"]
        assert rid.startswith("resp_") and started["status"] == "queued"
        job = Ledger().get(rid)  # recorded in the ledger, as `bgmode run` does
        assert job is not None and job.base_url == bgmode_server.base_url and job.model == "m1"

        final, text = await wait_done(client, rid)
        assert final["status"] == "completed" and final["usage"]["output_tokens"] > 0
        got = await call(client, "get_response", response_id=rid)
        assert got["status"] == "completed" and got["output_text"] == text and got["next_offset"] is None

        # a long output comes in pieces with a continuation offset, nothing cut
        pieces, offset = [], 0
        while offset is not None:
            part = await call(client, "get_response", response_id=rid, offset=offset, max_chars=17)
            assert part["output_chars"] == len(text)
            pieces.append(part["output_text"])
            offset = part["next_offset"]
        assert len(pieces) > 1 and "".join(pieces) == text

        # messages instead of a prompt
        second = await call(
            client,
            "start_background_response",
            messages=[{"role": "user", "content": [{"type": "input_text", "text": "Second job."}]}],
            metadata=FAST,
        )
        await wait_done(client, second["response_id"])

        jobs = (await call(client, "list_jobs"))["jobs"]
        assert [(j["response_id"], j["status"]) for j in jobs] == [
            (second["response_id"], "completed"),
            (rid, "completed"),
        ]
        assert jobs[0]["prompt"] == "Second job."


async def test_wait_is_bounded_and_cancel(bgmode_server: BgmodeServer) -> None:
    async with mcp_session("--base-url", bgmode_server.base_url) as client:
        rid = (await call(client, "start_background_response", prompt="long", metadata=SLOW))["response_id"]
        early = await call(client, "wait_for_response", response_id=rid, timeout_seconds=0.3)
        assert early["done"] is False and early["status"] in ("queued", "in_progress")
        assert "call wait_for_response again" in early["note"]

        cancelled = await call(client, "cancel_response", response_id=rid)
        assert cancelled["status"] == "cancelled" and cancelled["done"] is True
        again = await call(client, "cancel_response", response_id=rid)
        assert again["status"] == "cancelled"
        final, _ = await wait_done(client, rid)
        assert final["status"] == "cancelled"

        done = (await call(client, "start_background_response", prompt="short", metadata=FAST))["response_id"]
        await wait_done(client, done)
        message = await call_error(client, "cancel_response", response_id=done)
        assert "HTTP 400" in message and "Cannot cancel a completed response" in message
        statuses = {j["response_id"]: j["status"] for j in (await call(client, "list_jobs"))["jobs"]}
        assert statuses == {rid: "cancelled", done: "completed"}


async def test_bad_id_is_a_tool_error(bgmode_server: BgmodeServer) -> None:
    rid = "resp_" + "0" * 50
    async with mcp_session("--base-url", bgmode_server.base_url) as client:
        for tool in ("get_response", "wait_for_response", "cancel_response"):
            message = await call_error(client, tool, response_id=rid)
            assert "not found" in message and rid in message, message
        message = await call_error(client, "start_background_response")  # neither prompt nor messages
        assert "exactly one of prompt or messages" in message
        rejected = await call_error(
            client, "start_background_response", prompt="x", metadata={"sim_token_delay_ms": "-1"}
        )
        assert "HTTP 400" in rejected and "sim_token_delay_ms" in rejected
        # the server is still up; the refused create is in the ledger, the unknown id is not
        jobs = (await call(client, "list_jobs"))["jobs"]
        assert [(j["response_id"], j["status"]) for j in jobs] == [(None, "submit_failed")]


async def test_bad_key_is_a_tool_error(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--api-keys", "good-key:team"]).start()
    args = ("--base-url", server.base_url, "--api-key-env", "MY_BGMODE_KEY")
    async with mcp_session(*args, env={"MY_BGMODE_KEY": "wrong-key"}) as client:
        message = await call_error(client, "start_background_response", prompt="hi", metadata=FAST)
        assert "HTTP 401" in message, message
        assert (await call(client, "list_jobs"))["jobs"][0]["status"] == "submit_failed"
    async with mcp_session(*args, env={"MY_BGMODE_KEY": "good-key"}) as client:
        rid = (await call(client, "start_background_response", prompt="hi", metadata=FAST))["response_id"]
        final, _ = await wait_done(client, rid)
        assert final["status"] == "completed"


async def test_server_restart_while_waiting(make_server: type[BgmodeServer]) -> None:
    server = make_server().start()
    async with mcp_session("--base-url", server.base_url) as client:
        rid = (await call(client, "start_background_response", prompt="long", metadata=SLOW))["response_id"]
        running = await call(client, "wait_for_response", response_id=rid, timeout_seconds=0.2)
        assert running["done"] is False
        server.kill()  # a crash while the job runs; the agent is waiting on it
        waiting = asyncio.create_task(call(client, "wait_for_response", response_id=rid, timeout_seconds=45))
        await asyncio.to_thread(server.start)  # the same server (port, store) comes back
        out = await waiting
        # the restarted server settled the job (worker lost, or run again), and the wait saw it end
        assert out["done"] is True and out["status"] in ("completed", "failed"), out
        got = await call(client, "get_response", response_id=rid)
        assert got["status"] == out["status"]
        assert (await call(client, "list_jobs"))["jobs"][0]["status"] == out["status"]
