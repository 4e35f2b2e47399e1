"""Bad input, bounded resources, idempotent creates, API keys and tenant isolation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.serving import BgmodeServer, free_port


def post(server: BgmodeServer, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/responses", json=body, **kw)


def error(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "x"}, "model", "missing_required_parameter"),
        ({"model": 3, "input": "x"}, "model", "invalid_type"),
        ({"model": "m", "input": "x", "background": True, "store": False}, "background", "unsupported_parameter"),
        ({"model": "m", "input": "x", "max_output_tokens": 8}, "max_output_tokens", "integer_below_min_value"),
        ({"model": "m", "input": "x", "max_output_tokens": "many"}, "max_output_tokens", "invalid_type"),
        ({"model": "m", "input": "x", "temperature": 3}, "temperature", "decimal_above_max_value"),
        ({"model": "m", "input": 5}, "input", "invalid_type"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
        ({"model": "m", "input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort", "invalid_value"),
        (
            {"model": "m", "input": "x", "metadata": {f"k{i}": "v" for i in range(17)}},
            "metadata",
            "object_above_max_properties",
        ),
        ({"model": "m", "input": "x", "metadata": {"k": "v" * 513}}, "metadata.k", "string_above_max_length"),
        ({"model": "m", "input": "x", "metadata": {"k" * 65: "v"}}, "metadata", "invalid_value"),
    ],
)
def test_invalid_create_is_a_400_naming_the_param(
    bgmode_server: BgmodeServer, body: Any, param: str, code: str
) -> None:
    resp = post(bgmode_server, body)
    assert resp.status_code == 400
    err = error(resp)
    assert err["type"] == "invalid_request_error"
    assert (err["param"], err["code"]) == (param, code)


def test_unparseable_json_and_unknown_routes(bgmode_server: BgmodeServer) -> None:
    resp = httpx.post(
        f"{bgmode_server.base_url}/responses", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400 and error(resp)["code"] == "invalid_json"
    resp = httpx.get(f"{bgmode_server.base_url}/responses/resp_x/nowhere")
    assert resp.status_code == 404 and error(resp)["type"] == "invalid_request_error"
    resp = httpx.get(f"{bgmode_server.base_url}/responses/resp_x", params={"stream": "true", "starting_after": "abc"})
    assert resp.status_code == 400 and error(resp)["param"] == "starting_after"


def test_body_too_large_is_413(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--max-body-bytes", "1000"]).start()
    resp = post(server, {"model": "m", "input": "x" * 2000})
    assert resp.status_code == 413
    assert error(resp)["type"] == "invalid_request_error"


def test_idempotency_key_returns_the_original(bgmode_server: BgmodeServer) -> None:
    client = OpenAI(base_url=bgmode_server.base_url, api_key="k", max_retries=0)
    key = {"Idempotency-Key": f"idem-{time.time_ns()}"}
    first = client.responses.create(model="m", input="once", background=True, extra_headers=key)
    again = client.responses.create(model="m", input="once", background=True, extra_headers=key)
    assert again.id == first.id
    other = client.responses.create(model="m", input="once", background=True)
    assert other.id != first.id


def test_queue_limit_is_429_with_retry_after(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--workers", "0", "--max-queued", "2"]).start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    for _ in range(2):
        client.responses.create(model="m", input="x", background=True)
    resp = post(server, {"model": "m", "input": "x", "background": True})
    assert resp.status_code == 429
    assert resp.headers["retry-after"]
    assert error(resp)["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="m", input="x", background=True)


async def test_concurrent_creates_never_overshoot_the_queue_limit(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--workers", "0", "--max-queued", "3"]).start()
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    outcomes = await asyncio.gather(
        *(client.responses.create(model="m", input=f"x{i}", background=True) for i in range(24)),
        return_exceptions=True,
    )
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert (len(created), len(refused)) == (3, 21)
    async with httpx.AsyncClient() as http:
        listing = (await http.get(f"{server.base_url}/responses", params={"status": "queued", "limit": 100})).json()
    assert sorted(r["id"] for r in listing["data"]) == sorted(r.id for r in created)


def test_queue_limit_per_key(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--workers", "0", "--max-queued-per-key", "1", "--api-keys", "ka:alice,kb:bob"]).start()
    alice = OpenAI(base_url=server.base_url, api_key="ka", max_retries=0)
    bob = OpenAI(base_url=server.base_url, api_key="kb", max_retries=0)
    alice.responses.create(model="m", input="x", background=True)
    with pytest.raises(openai.RateLimitError):
        alice.responses.create(model="m", input="x", background=True)
    assert bob.responses.create(model="m", input="x", background=True).status == "queued"


def test_retention_sweeps_event_logs_then_responses(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--events-ttl", "0.5", "--response-ttl", "3", "--sweep-seconds", "0.2"]).start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    r = client.responses.create(model="m", input="x", background=True, stream=True)
    rid = list(r)[-1].response.id  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while True:  # wait for the sweeper (bounded): first the log goes, with a clear 400
        resp = httpx.get(f"{server.base_url}/responses/{rid}", params={"stream": "true"})
        if resp.status_code == 400:
            assert error(resp)["code"] == "stream_expired"
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.responses.retrieve(rid).status == "completed"  # the response itself is still kept
    while True:  # then the response
        try:
            client.responses.retrieve(rid)
        except openai.NotFoundError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)


# -- API keys and tenants ----------------------------------------------------------------------


@pytest.fixture
def keyed(make_server: type[BgmodeServer]) -> BgmodeServer:
    # debug logging, so that "keys are never logged" is checked against everything the server says
    return make_server(args=["--api-keys", "key-alice:alice,key-bob:bob", "--log-level", "debug"]).start()


def test_missing_or_wrong_key_is_401(keyed: BgmodeServer) -> None:
    resp = post(keyed, {"model": "m", "input": "x"})
    assert resp.status_code == 401 and error(resp)["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=keyed.base_url, api_key="wrong", max_retries=0).responses.create(model="m", input="x")
    assert httpx.get(f"{keyed.url}/healthz").status_code == 200


def test_other_tenants_get_404_everywhere(keyed: BgmodeServer) -> None:
    alice = OpenAI(base_url=keyed.base_url, api_key="key-alice", max_retries=0)
    bob = OpenAI(base_url=keyed.base_url, api_key="key-bob", max_retries=0)
    r = alice.responses.create(model="m", input="secret", background=True, metadata={"sim_token_delay_ms": "50"})
    calls = [
        lambda: bob.responses.retrieve(r.id),
        lambda: list(bob.responses.retrieve(r.id, stream=True)),
        lambda: bob.responses.cancel(r.id),
        lambda: bob.responses.delete(r.id),
        lambda: bob.responses.input_items.list(r.id),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as err:
        bob.responses.create(model="m", input="x", previous_response_id=r.id)
    assert err.value.code == "previous_response_not_found"  # type: ignore[attr-defined]
    assert alice.responses.retrieve(r.id).id == r.id  # still alice's, untouched
    assert alice.responses.cancel(r.id).status == "cancelled"
    assert "key-alice" not in keyed.log() and "key-bob" not in keyed.log()  # keys are never logged


def test_non_loopback_without_keys_refuses_to_start() -> None:
    cmd = [
        sys.executable,
        "-m",
        "bgmode",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--store",
        "sqlite:///:memory:",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "--insecure-no-auth" in out.stderr
