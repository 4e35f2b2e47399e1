"""The Responses API's background mode, driven over HTTP with the official openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.responses import Response

from tests.sdk import TERMINAL, deltas
from tests.serving import BgmodeServer

SLOW = {"sim_output_tokens": "2000", "sim_token_delay_ms": "20"}


def wait_done(client: OpenAI, response_id: str) -> Response:
    """Follow a response to its end through its event stream (no polling sleeps)."""
    with client.responses.retrieve(response_id, stream=True) as events:
        for _ in events:
            pass
    r = client.responses.retrieve(response_id)
    assert r.status in TERMINAL
    return r


# -- the guide's flows ------------------------------------------------------------------------


def test_create_returns_queued_then_poll_completes(client: OpenAI) -> None:
    r = client.responses.create(model="gpt-5.2", input="Write a haiku.", background=True)
    assert r.status == "queued"
    assert r.background is True
    assert r.output == []
    assert r.usage is None
    assert r.id.startswith("resp_")
    done = wait_done(client, r.id)
    assert done.status == "completed"
    assert done.output_text
    assert done.completed_at is not None
    assert done.usage is not None
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    assert done.usage.output_tokens > 0


async def test_async_client_create_poll_cancel(aclient: AsyncOpenAI) -> None:
    r = await aclient.responses.create(model="m", input="hi", background=True, metadata=SLOW)
    assert r.status == "queued"
    got = await aclient.responses.retrieve(r.id)
    assert got.id == r.id
    cancelled = await aclient.responses.cancel(r.id)
    assert cancelled.status == "cancelled"
    assert (await aclient.responses.retrieve(r.id)).status == "cancelled"


async def test_async_client_stream_drop_and_resume(aclient: AsyncOpenAI) -> None:
    stream = await aclient.responses.create(
        model="m", input="async resume", background=True, stream=True, metadata={"sim_output_tokens": "40"}
    )
    seen = []
    async for ev in stream:
        seen.append(ev)
        if ev.type == "response.output_text.delta":
            break
    await stream.close()  # the connection drops mid-response
    rid = seen[0].response.id  # type: ignore[union-attr]
    rest = [
        ev async for ev in await aclient.responses.retrieve(rid, stream=True, starting_after=seen[-1].sequence_number)
    ]
    whole = seen + rest
    assert [e.sequence_number for e in whole] == list(range(len(whole)))
    assert rest[-1].type == "response.completed"
    assert deltas(whole) == (await aclient.responses.retrieve(rid)).output_text


async def test_async_stream_helper_final_response(aclient: AsyncOpenAI) -> None:
    r = await aclient.responses.create(model="m", input="async helper", background=True)
    async with aclient.responses.stream(response_id=r.id) as stream:
        final = await stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == (await aclient.responses.retrieve(r.id)).output_text


def test_background_stream_event_order_and_sequence(client: OpenAI) -> None:
    events = list(client.responses.create(model="m", input="hello", background=True, stream=True))
    types = [e.type for e in events]
    assert types[:5] == [
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.status == "queued"  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == deltas(events)
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_resume_with_starting_after_after_dropped_connection(client: OpenAI) -> None:
    stream = client.responses.create(
        model="m",
        input="resume me",
        background=True,
        stream=True,
        metadata=SLOW | {"sim_output_tokens": "60", "sim_token_delay_ms": "5"},
    )
    seen = []
    for ev in stream:
        seen.append(ev)
        if ev.type == "response.output_text.delta" and len(seen) >= 8:
            break
    stream.close()  # the connection drops mid-response
    rid = seen[0].response.id  # type: ignore[union-attr]
    cursor = seen[-1].sequence_number
    with client.responses.retrieve(rid, stream=True, starting_after=cursor) as rest:
        resumed = list(rest)
    assert resumed[0].sequence_number == cursor + 1
    assert resumed[-1].type == "response.completed"
    all_events = seen + resumed
    assert [e.sequence_number for e in all_events] == list(range(len(all_events)))
    assert deltas(all_events) == client.responses.retrieve(rid).output_text


def test_stream_helper_by_response_id_and_final_response(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="helper", background=True)
    with client.responses.stream(response_id=r.id, starting_after=3) as stream:
        seqs = [ev.sequence_number for ev in stream]
        final = stream.get_final_response()
    assert seqs and min(seqs) == 4
    assert final.status == "completed"
    assert final.output_text == client.responses.retrieve(r.id).output_text


def test_any_background_response_can_be_streamed_from_zero(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="not created with stream", background=True)
    done = wait_done(client, r.id)
    with client.responses.retrieve(r.id, stream=True) as replay:
        events = list(replay)
    assert events[0].type == "response.created" and events[0].sequence_number == 0
    assert deltas(events) == done.output_text


def test_client_disconnect_does_not_cancel(client: OpenAI) -> None:
    stream = client.responses.create(
        model="m", input="keep going", background=True, stream=True, metadata={"sim_token_delay_ms": "10"}
    )
    first = next(iter(stream))
    stream.close()
    done = wait_done(client, first.response.id)  # type: ignore[union-attr]
    assert done.status == "completed"


def test_sync_response_is_stored_and_not_streamable(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="sync")
    assert r.status == "completed" and r.background is False
    assert client.responses.retrieve(r.id).output_text == r.output_text
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.retrieve(r.id, stream=True)
    assert err.value.param == "stream"  # type: ignore[attr-defined]


def test_sync_stream_and_store_false(client: OpenAI) -> None:
    events = list(client.responses.create(model="m", input="s", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    r = client.responses.create(model="m", input="s", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_in_progress_ends_stream_with_cancelled(client: OpenAI) -> None:
    stream = client.responses.create(model="m", input="long", background=True, stream=True, metadata=SLOW)
    rid = None
    events = []
    for ev in stream:
        events.append(ev)
        if ev.type == "response.created":
            rid = ev.response.id
        if ev.type == "response.output_text.delta":
            assert rid is not None
            cancelled = client.responses.cancel(rid)
            assert cancelled.status == "cancelled"
            break
    # the live stream ends with response.failed carrying status "cancelled" (the spec has no
    # cancelled stream event; every SDK knows response.failed)
    rest = list(stream)
    assert rest[-1].type == "response.failed"
    assert rest[-1].response.status == "cancelled"
    again = client.responses.cancel(rid)  # idempotent
    assert again.status == "cancelled"
    final = client.responses.retrieve(rid)
    assert final.status == "cancelled"
    assert final.output_text == deltas(events + rest)


def test_cancel_queued_with_no_workers(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--workers", "0"]).start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    r = client.responses.create(model="m", input="never runs", background=True)
    assert client.responses.retrieve(r.id).status == "queued"
    c = client.responses.cancel(r.id)
    assert c.status == "cancelled"
    with client.responses.retrieve(r.id, stream=True) as s:
        types = [e.type for e in s]
    assert types == ["response.created", "response.queued", "response.failed"]


def test_cancel_errors(client: OpenAI) -> None:
    done = wait_done(client, client.responses.create(model="m", input="x", background=True).id)
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a completed response."):
        client.responses.cancel(done.id)
    sync = client.responses.create(model="m", input="x")
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a synchronous response."):
        client.responses.cancel(sync.id)
    with pytest.raises(openai.NotFoundError, match="Response with id 'resp_nope' not found."):
        client.responses.cancel("resp_nope")
    failed = wait_done(
        client,
        client.responses.create(model="m", input="x", background=True, metadata={"sim_fail_after_tokens": "2"}).id,
    )
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a failed response."):
        client.responses.cancel(failed.id)


def test_cancel_accepts_json_content_type_with_empty_body(bgmode_server: BgmodeServer, client: OpenAI) -> None:
    r = client.responses.create(model="m", input="x", background=True, metadata=SLOW)
    resp = httpx.post(
        f"{bgmode_server.base_url}/responses/{r.id}/cancel",
        headers={"Content-Type": "application/json", "Authorization": "Bearer k"},
    )
    assert resp.status_code == 200
    assert resp.json()["status"] == "cancelled"


# -- terminal states ---------------------------------------------------------------------------


def test_max_output_tokens_ends_incomplete(client: OpenAI) -> None:
    events = list(
        client.responses.create(
            model="m",
            input="x",
            background=True,
            stream=True,
            max_output_tokens=16,
            metadata={"sim_output_tokens": "50"},
        )
    )
    assert events[-1].type == "response.incomplete"
    r = client.responses.retrieve(events[0].response.id)  # type: ignore[union-attr]
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 16
    assert r.completed_at is None


def test_backend_failure_ends_failed_keeping_partial_output(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="x", background=True, metadata={"sim_fail_after_tokens": "5"})
    done = wait_done(client, r.id)
    assert done.status == "failed"
    assert done.error is not None and done.error.code == "server_error"
    assert len(done.output_text.split()) == 5
    assert done.usage is not None


def test_reasoning_effort_and_verbosity_are_visible(client: OpenAI) -> None:
    low = client.responses.create(model="m", input="x", text={"verbosity": "low"})
    high = client.responses.create(model="m", input="x", text={"verbosity": "high"})
    assert len(high.output_text.split()) > len(low.output_text.split())
    r = client.responses.create(model="m", input="x", reasoning={"effort": "high"})
    assert r.output[0].type == "reasoning"
    assert r.usage is not None and r.usage.output_tokens_details.reasoning_tokens > 0
    same = client.responses.create(model="m", input="x", reasoning={"effort": "high"})
    assert same.output_text == r.output_text  # deterministic for the same input


# -- other endpoints ---------------------------------------------------------------------------


def test_previous_response_id_chains_context(client: OpenAI) -> None:
    first = client.responses.create(model="m", input="first turn")
    second = client.responses.create(model="m", input="second turn", previous_response_id=first.id)
    alone = client.responses.create(model="m", input="second turn")
    assert second.previous_response_id == first.id
    assert second.usage is not None and alone.usage is not None
    assert second.usage.input_tokens > alone.usage.input_tokens
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="m", input="x", previous_response_id="resp_missing")
    assert err.value.code == "previous_response_not_found"  # type: ignore[attr-defined]


def test_input_items_pagination(client: OpenAI) -> None:
    msgs = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    r = client.responses.create(model="m", input=msgs, background=True)  # type: ignore[arg-type]
    page = client.responses.input_items.list(r.id, limit=2, order="asc")
    assert [it.content[0].text for it in page.data] == ["m0", "m1"]  # type: ignore[union-attr]
    assert page.has_more
    everything = [it.content[0].text for it in client.responses.input_items.list(r.id, limit=2, order="asc")]  # type: ignore[union-attr]
    assert everything == [f"m{i}" for i in range(5)]
    desc = client.responses.input_items.list(r.id)
    assert [it.content[0].text for it in desc.data] == [f"m{i}" for i in reversed(range(5))]  # type: ignore[union-attr]


def test_delete(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="x")
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_health_ready_openapi_models(bgmode_server: BgmodeServer) -> None:
    assert httpx.get(f"{bgmode_server.url}/healthz").status_code == 200
    assert httpx.get(f"{bgmode_server.url}/readyz").status_code == 200
    spec = httpx.get(f"{bgmode_server.url}/openapi.json").json()
    assert "/v1/responses/{response_id}/cancel" in spec["paths"]
    models = httpx.get(f"{bgmode_server.base_url}/models").json()
    assert models["object"] == "list" and isinstance(models["data"], list)


def test_keepalive_comments_on_idle_stream(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--workers", "0", "--keepalive-seconds", "0.2"]).start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    r = client.responses.create(model="m", input="x", background=True)
    lines = []
    with httpx.stream("GET", f"{server.base_url}/responses/{r.id}", params={"stream": "true"}, timeout=10) as resp:
        for line in resp.iter_lines():
            lines.append(line)
            if line.startswith(":"):
                break
    assert ": keep-alive" in lines
    assert "event: response.created" in lines


# -- durability --------------------------------------------------------------------------------


def test_restart_keeps_responses_and_events(make_server: type[BgmodeServer]) -> None:
    server = make_server().start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    r = client.responses.create(model="m", input="durable", background=True)
    done = wait_done(client, r.id)
    with client.responses.retrieve(r.id, stream=True) as s:
        before = [(e.sequence_number, e.type) for e in s]
    server.restart()
    again = client.responses.retrieve(r.id)
    assert again.output_text == done.output_text and again.status == "completed"
    with client.responses.retrieve(r.id, stream=True) as s:
        after = [(e.sequence_number, e.type) for e in s]
    assert after == before


def test_queued_response_survives_restart_and_runs(make_server: type[BgmodeServer], tmp_path: object) -> None:
    api_only = make_server(args=["--workers", "0"]).start()
    client = OpenAI(base_url=api_only.base_url, api_key="k", max_retries=0)
    r = client.responses.create(model="m", input="later", background=True)
    api_only.kill()
    worker = make_server(port=api_only.port).start()
    assert worker.base_url == api_only.base_url
    assert wait_done(client, r.id).status == "completed"
