"""`bgmode jobs --server`: the server's responses through `GET /v1/responses`, on SQLite and
PostgreSQL, and a clear message from servers that have no such listing (OpenAI's API)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.faulty_proxy import FaultyProxy
from tests.serving import BgmodeServer
from tests.test_client_helpers import CliResult, bgmode, on_terminal

QUICK = {"sim_output_tokens": "2", "sim_token_delay_ms": "0"}
#: a response that runs until it is cancelled
LONG = {"sim_output_tokens": "100000", "sim_token_delay_ms": "50"}


@pytest.fixture
def keyed(make_server: type[BgmodeServer]) -> Iterator[BgmodeServer]:
    # one store is enough here: the listing itself is tested on SQLite and PostgreSQL in
    # tests/test_listing.py and tests/test_store_listing.py; this is the client's side
    yield make_server(args=["--api-keys", "ka:alice,kb:bob"]).start()


def _listed(r: CliResult) -> list[str]:
    assert r.code == 0, (r.stdout, r.stderr)
    return [e["response_id"] for e in r.all("job")]


def _finished(sdk: OpenAI, rid: str) -> str:
    """Wait (bounded, by polling) until `rid` is terminal; return its status."""
    deadline = time.monotonic() + 60
    while True:
        status = sdk.responses.retrieve(rid).status
        if status not in ("queued", "in_progress"):
            return str(status)
        assert time.monotonic() < deadline, f"{rid} still {status}"
        time.sleep(0.05)  # polling for a condition, with a deadline


def test_jobs_server_lists_filters_and_pages(keyed: BgmodeServer) -> None:
    alice = OpenAI(base_url=keyed.base_url, api_key="ka", max_retries=0)
    bob = OpenAI(base_url=keyed.base_url, api_key="kb", max_retries=0)
    made: list[str] = []  # oldest first
    for i in range(104):
        model = "model-b" if i % 10 == 3 else "model-a"
        made.append(alice.responses.create(model=model, input=f"q{i}", background=True, metadata=QUICK).id)
    running = alice.responses.create(model="model-a", input="long", background=True, metadata=LONG).id
    made.append(running)
    theirs = bob.responses.create(model="model-a", input="bob's", background=True, metadata=QUICK).id
    for rid in made[:-1]:
        assert _finished(alice, rid) == "completed"
    cancelled = alice.responses.cancel(running)
    assert cancelled.status == "cancelled"
    newest_first = made[::-1]

    with FaultyProxy(keyed.url) as proxy:
        base = ("jobs", "--server", "--base-url", proxy.base_url, "--api-key", "ka")
        # default: the newest 20, one page
        r = bgmode(*base)
        assert _listed(r) == newest_first[:20]
        first = r.all("job")[0]
        assert first["status"] == "cancelled" and first["model"] == "model-a"
        assert first["base_url"] == proxy.base_url and first["background"] is True
        assert first["created_at"].endswith("Z")
        assert r.all("job")[1]["status"] == "completed" and r.all("job")[1]["output_tokens"] > 0
        (page,) = proxy.matching("GET", "/v1/responses")
        assert page.query == {"limit": ["20"], "order": ["desc"]}
        assert page.headers["authorization"] == "Bearer ka"

        # --limit 0: everything, through has_more, with `after` = the last id of the page before
        proxy.requests.clear()
        assert _listed(bgmode(*base, "--limit", "0")) == newest_first
        pages = proxy.matching("GET", "/v1/responses")
        assert len(pages) == 2
        assert pages[0].query["limit"] == ["100"] and "after" not in pages[0].query
        assert pages[1].query["after"] == [newest_first[99]]

        # a limit past one page stops at the limit
        proxy.requests.clear()
        assert _listed(bgmode(*base, "--limit", "102")) == newest_first[:102]
        assert [p.query["limit"] for p in proxy.matching("GET", "/v1/responses")] == [["100"], ["2"]]

        # filters go to the server
        only_b = [rid for i, rid in enumerate(made) if i % 10 == 3 and rid != running][::-1]
        assert _listed(bgmode(*base, "--model", "model-b", "--limit", "0")) == only_b
        assert _listed(bgmode(*base, "--status", "cancelled")) == [running]
        assert _listed(bgmode(*base, "--status", "completed", "--model", "model-b", "--limit", "2")) == only_b[:2]
        assert _listed(bgmode(*base, "--status", "queued")) == []

        # a server that is briefly unavailable is retried
        proxy.fail(2, 503, method="GET", path_contains="/v1/responses")
        again = bgmode(*base, "--limit", "3")
        assert _listed(again) == newest_first[:3]
        assert [e["operation"] for e in again.all("retry")] == ["list", "list"]

    # tenant-scoped: bob sees only his own
    assert _listed(bgmode("jobs", "--server", "--base-url", keyed.base_url, "--api-key", "kb")) == [theirs]
    # the key can come from the environment, the URL too
    env = bgmode(
        "jobs",
        "--server",
        "--limit",
        "1",
        env={"OPENAI_BASE_URL": keyed.base_url, "OPENAI_API_KEY": "kb"},
    )
    assert _listed(env) == [theirs]


def test_a_wrong_key_is_a_rejected_request(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--api-keys", "ka:alice"]).start()
    r = bgmode("jobs", "--server", "--base-url", server.base_url, "--api-key", "nope")
    assert r.code == 7, r.stderr
    err = r.one("error")
    assert err["status_code"] == 401 and err["message"].startswith("HTTP 401")
    assert "job" not in r.names()


@pytest.mark.parametrize("status", [404, 405])
def test_a_server_without_the_listing_gets_a_clear_message(bgmode_server: BgmodeServer, status: int) -> None:
    """OpenAI's own API has no GET /v1/responses: say so, exit 7, list nothing."""
    with FaultyProxy(bgmode_server.url) as proxy:
        proxy.fail(10, status, method="GET", path_contains="/v1/responses")
        r = bgmode("jobs", "--server", "--base-url", proxy.base_url)
        assert r.code == 7, r.stderr
        err = r.one("error")
        assert "does not support listing responses" in err["message"]
        assert f"HTTP {status}" in err["message"] and err["status_code"] == status
        assert "job" not in r.names()
        assert len(proxy.matching("GET", "/v1/responses")) == 1  # not retried


def test_jobs_flag_combinations_are_usage_errors() -> None:
    for argv in (
        ("jobs", "--status", "completed"),  # filters need --server
        ("jobs", "--model", "m"),
        ("jobs", "--base-url", "http://127.0.0.1:9/v1"),  # the ledger needs no server
        ("jobs", "--api-key", "k"),
        ("jobs", "--interval", "1"),  # only with --watch
        ("jobs", "--server", "--watch"),
        ("jobs", "--server", "--status", "done"),  # not a status
        ("jobs", "--server"),  # OpenAI's API, and no key
    ):
        r = bgmode(*argv)
        assert r.code == 2, (argv, r.stderr)
        assert "Error:" in r.stderr


def test_jobs_server_on_a_terminal_draws_a_table(bgmode_server: BgmodeServer) -> None:
    sdk = OpenAI(base_url=bgmode_server.base_url, api_key="k", max_retries=0)
    rid = sdk.responses.create(model="table-model", input="hi", background=True, metadata=QUICK).id
    assert _finished(sdk, rid) == "completed"
    text = on_terminal("jobs", "--server", "--base-url", bgmode_server.base_url, "--model", "table-model")
    assert "output tokens" in text and rid in text and "completed" in text and "table-model" in text, text
    assert '"event"' not in text
