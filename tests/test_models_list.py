"""`GET /v1/models` lists something useful when a `*` route serves every name."""

from __future__ import annotations

from openai import OpenAI

from bgmode.models import SIM_MODELS
from tests.fake_upstream import FakeUpstream
from tests.serving import BgmodeServer


def test_the_simulator_lists_its_documented_names(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == list(SIM_MODELS)


def test_a_star_upstream_lists_the_upstreams_models(make_server: type[BgmodeServer]) -> None:
    with FakeUpstream() as fake:
        fake.plan(model="llama3")
        fake.plan(model="qwen")
        server = make_server(args=["--upstream-url", fake.base_url, "--upstream-api", "chat"]).start()
        client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        listed = client.models.list().data
        assert {m.id for m in listed} >= {"llama3", "qwen"}
        assert all(m.owned_by == "fake" for m in listed)
