"""`bgmode serve` in front of the fake upstream, driven by the official openai SDK."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fake_upstream import FakeUpstream
from tests.serving import BgmodeServer

KEY = "sk-test-E2E-Upstream-Secret-4242"
TERMINAL = ("response.completed", "response.failed", "response.incomplete")


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


def config(tmp_path: Path, fake: FakeUpstream, api: str = "chat", star: bool = False) -> str:
    """A config routing "local" (and maybe "*") to the fake, with quick retries."""
    path = tmp_path / "routes.toml"
    names = '"local", "*"' if star else '"local"'
    path.write_text(
        f'[[route]]\nmodels = [{names}]\napi = "{api}"\nbase_url = "{fake.base_url}"\n'
        'api_key_env = "UP_KEY"\nmax_retries = 1\nretry_backoff = 0.01\nidle_timeout = 5\n'
    )
    return str(path)


def serve(make_server: type[BgmodeServer], *args: str) -> OpenAI:
    server = make_server(args=list(args), env={"UP_KEY": KEY}).start()
    return OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)


def run_to_end(client: OpenAI, model: str, **kw: Any) -> tuple[list[Any], Any]:
    """Create a background+stream response, read its events to the terminal one, then GET it."""
    events = []
    with client.responses.create(model=model, input="Say hello", background=True, stream=True, **kw) as stream:
        for ev in stream:
            events.append(ev)
            if ev.type in TERMINAL:
                break
    return events, client.responses.retrieve(events[0].response.id)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_routed_model_completes(
    make_server: type[BgmodeServer], fake: FakeUpstream, tmp_path: Path, api: str
) -> None:
    fake.plan(reasoning=["Thinking."] if api == "chat" else [], text=["Hello", " there"])
    client = serve(make_server, "--config", config(tmp_path, fake, api))
    events, final = run_to_end(client, "local", instructions="Be brief.")
    assert final.status == "completed"
    assert final.output_text == "Hello there"
    assert final.usage is not None and final.usage.input_tokens == 11 and final.usage.output_tokens == 7
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hello there"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    [sent] = fake.requests
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "local"
    if api == "chat":
        assert any(item.type == "reasoning" for item in final.output)
        assert sent.body["messages"][0] == {"role": "system", "content": "Be brief."}
    else:
        assert sent.body["store"] is False and sent.body["instructions"] == "Be brief."


def test_models_lists_the_routes_and_unrouted_names_are_404(
    make_server: type[BgmodeServer], fake: FakeUpstream, tmp_path: Path
) -> None:
    client = serve(make_server, "--config", config(tmp_path, fake))
    assert [m.id for m in client.models.list()] == ["local"]
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="elsewhere", input="hi", background=True)
    assert err.value.code == "model_not_found"
    assert fake.requests == []


def test_star_routes_every_name_through_the_flags(make_server: type[BgmodeServer], fake: FakeUpstream) -> None:
    client = serve(make_server, "--upstream-url", fake.base_url, "--upstream-api", "chat")
    _, final = run_to_end(client, "any-model-at-all")
    assert final.status == "completed" and final.output_text == "Hello, world!"
    assert fake.bodies()[0]["model"] == "any-model-at-all"


def test_upstream_500_fails_naming_the_status(
    make_server: type[BgmodeServer], fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.plan(status=500, error_message="the GPU caught fire")
    client = serve(make_server, "--config", config(tmp_path, fake))
    events, final = run_to_end(client, "local")
    assert events[-1].type == "response.failed"
    assert final.status == "failed"
    assert final.error is not None and final.error.code == "server_error"
    assert "HTTP 500" in final.error.message and "the GPU caught fire" in final.error.message
    assert len(fake.requests) == 2  # max_retries = 1


def test_break_mid_stream_fails_keeping_the_partial_output(
    make_server: type[BgmodeServer], fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.plan(text=["One", " two", " three", " four"], break_after=2)
    client = serve(make_server, "--config", config(tmp_path, fake))
    _, final = run_to_end(client, "local")
    assert final.status == "failed"
    assert final.error is not None and "broke after 2 tokens" in final.error.message
    assert final.output_text == "One two"


def test_cancel_aborts_the_upstream_request(
    make_server: type[BgmodeServer], fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.plan(stall_after=1)
    client = serve(make_server, "--config", config(tmp_path, fake))
    response_id = ""
    with client.responses.create(model="local", input="hi", background=True, stream=True) as stream:
        for ev in stream:
            if ev.type == "response.created":
                response_id = ev.response.id
            if ev.type == "response.output_text.delta":
                break  # the first token arrived; the upstream now stalls
    assert not fake.disconnected.is_set()
    cancelled = client.responses.cancel(response_id)
    assert cancelled.status == "cancelled"
    assert fake.disconnected.wait(30)  # the upstream saw the disconnect


def test_the_upstream_key_never_reaches_the_client(
    make_server: type[BgmodeServer], fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.plan(status=500, echo_auth=True)  # retried once: the retry is logged too
    server = make_server(args=["--config", config(tmp_path, fake)], env={"UP_KEY": KEY}).start()
    client = OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    events, final = run_to_end(client, "local")
    assert final.status == "failed" and final.error is not None
    assert "[redacted]" in final.error.message
    assert KEY not in final.model_dump_json()
    assert all(KEY not in e.model_dump_json() for e in events)
    assert "retry 1/1" in server.log()
    assert KEY not in server.log()


def test_hosted_tool_items_from_a_responses_upstream(
    make_server: type[BgmodeServer], fake: FakeUpstream, tmp_path: Path
) -> None:
    """A `responses` upstream's hosted-tool item and annotation are stored, returned and replayed
    verbatim, renumbered into bgmode's log; its function calls become bgmode's own items."""
    ann = {"type": "url_citation", "url": "https://e.com", "title": "e", "start_index": 0, "end_index": 2}
    fake.plan("local", hosted=True, annotation=ann, text=["Hi"])
    client = serve(make_server, "--config", config(tmp_path, fake, api="responses"))
    r = client.responses.create(model="local", input="search", tools=[{"type": "web_search"}], background=True)
    with client.responses.retrieve(r.id, stream=True) as s:
        events = list(s)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert "response.web_search_call.searching" in types and "response.output_text.annotation.added" in types
    done = client.responses.retrieve(r.id)
    assert [o.type for o in done.output] == ["web_search_call", "message"]
    assert done.output[0].id == "ws_1" and done.output[0].status == "completed"  # type: ignore[union-attr]
    assert done.output[1].content[0].annotations[0].url == "https://e.com"  # type: ignore[union-attr]
    assert fake.bodies("/responses")[0]["tools"] == [{"type": "web_search"}]
    # on a chat route the same tool is refused, naming it
    chat = serve(make_server, "--config", config(tmp_path, fake, api="chat"))
    with pytest.raises(openai.BadRequestError) as e:
        chat.responses.create(model="local", input="x", tools=[{"type": "web_search"}])
    assert e.value.body["param"] == "tools[0].type"  # type: ignore[index]


def test_client_can_omit_reasoning_for_models_that_refuse_it(
    make_server: type[BgmodeServer], fake: FakeUpstream, tmp_path: Path
) -> None:
    server = make_server(args=["--config", config(tmp_path, fake)], env={"UP_KEY": KEY}).start()
    env = {**os.environ, "OPENAI_API_KEY": "k", "BGMODE_LEDGER_PATH": str(tmp_path / "ledger.db")}
    base = ["bgmode", "run", "--base-url", server.base_url, "--model", "local", "--prompt", "hi"]
    cmd = [sys.executable, "-m", *base]
    omitted = subprocess.run([*cmd, "--reasoning-effort", "omit"], env=env, capture_output=True, text=True, timeout=60)
    default = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert omitted.returncode == 0 and default.returncode == 0, omitted.stderr + default.stderr
    first, second = fake.bodies("/chat/completions")
    assert "reasoning_effort" not in first
    assert second["reasoning_effort"] == "medium"


def test_an_upstream_refusing_a_parameter_is_reported_with_the_option_to_turn_off(
    make_server: type[BgmodeServer], fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.plan("local", reject_params=["reasoning_effort"])
    server = make_server(args=["--config", config(tmp_path, fake)], env={"UP_KEY": KEY}).start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    r = client.responses.create(model="local", input="hi", reasoning={"effort": "low"})
    assert r.status == "failed" and r.error is not None and r.error.code == "invalid_prompt"
    assert "UnsupportedParamsError" in r.error.message and "send_reasoning_effort=false" in r.error.message
    # the same route with the option set: the parameter is no longer sent and the call works
    server.kill()
    fixed = make_server(
        args=[
            "--upstream-url",
            fake.base_url,
            "--upstream-option",
            "send_reasoning_effort=false",
            "--upstream-model",
            "local",
        ]
    ).start()
    ok = OpenAI(base_url=fixed.base_url, api_key="k", max_retries=0).responses.create(
        model="anything", input="hi", reasoning={"effort": "low"}
    )
    assert ok.status == "completed" and ok.output_text == "Hello, world!"
    assert r.id in server.log() and "model=local route=chat" in server.log()
