"""`POST /v1/responses/input_tokens` (`client.responses.input_tokens.count`), over HTTP with the
official SDK: the same bodies as create, counted by the backend that would serve the model."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from openai import OpenAI

from tests.fake_upstream import FakeUpstream
from tests.serving import BgmodeServer


def test_counts_the_context_a_create_would_send(client: OpenAI) -> None:
    short = client.responses.input_tokens.count(model="m", input="hi")
    long = client.responses.input_tokens.count(model="m", input="hi " * 400, instructions="Be brief.")
    assert short.object == "response.input_tokens"
    assert 0 < short.input_tokens < long.input_tokens
    first = client.responses.create(model="m", input="remember the number 42 " * 50)
    chained = client.responses.input_tokens.count(model="m", input="hi", previous_response_id=first.id)
    assert chained.input_tokens > short.input_tokens  # the previous turn is part of the context
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.input_tokens.count(model="m", input="x", previous_response_id="resp_missing")
    assert e.value.code == "previous_response_not_found"


def test_refuses_what_create_refuses(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.input_tokens.count(model="m", input="x", tools=[{"type": "web_search"}])
    assert e.value.body["param"] == "tools[0].type"  # type: ignore[index]


def test_a_responses_upstream_counts_for_itself(make_server: type[BgmodeServer], tmp_path: Path) -> None:
    with FakeUpstream() as fake:
        server = make_server(args=["--upstream-url", fake.base_url, "--upstream-api", "responses"]).start()
        c = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        got = c.responses.input_tokens.count(model="gpt-x", input="one two three")
        assert got.input_tokens > 1000  # the fake's own count, not bgmode's estimate
        [sent] = fake.bodies("/responses/input_tokens")
        assert sent["model"] == "gpt-x" and "stream" not in sent
