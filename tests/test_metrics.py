"""`GET /metrics`: scraped over HTTP from real `bgmode serve` processes after SDK traffic, parsed
with prometheus-client's own parser; the series a dashboard graphs change as a user expects."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import openai
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.serving import BgmodeServer, free_port

pytest_plugins = ("tests.pg",)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: BgmodeServer, key: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def wait_for(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling for a condition, bounded


def sim(tokens: int, delay_ms: int = 0) -> dict[str, str]:
    return {"sim_output_tokens": str(tokens), "sim_token_delay_ms": str(delay_ms)}


def test_traffic_shows_in_the_series_a_dashboard_graphs(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--workers", "4"]).start()
    c = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    before = scrape(server)
    assert value(before, "bgmode_responses_created_total", model="m-bg", mode="background") == 0

    # three background responses run to completion and are polled
    ids = [c.responses.create(model="m-bg", input="hi", background=True, metadata=sim(12)).id for _ in range(3)]
    for rid in ids:
        wait_for(lambda rid=rid: c.responses.retrieve(rid).status == "completed", what=f"{rid} completed")
    # one streamed create, one foreground create, one cancelled while running
    with c.responses.create(model="m-bg", input="hi", background=True, stream=True, metadata=sim(5)) as stream:
        assert [e.type for e in stream][-1] == "response.completed"
    fg = c.responses.create(model="m-fg", input="hi", metadata=sim(7))
    assert fg.status == "completed"
    slow = c.responses.create(model="m-slow", input="hi", background=True, metadata=sim(1000, 20))
    wait_for(lambda: value(scrape(server), "bgmode_worker_running") == 1, what="the slow response running")
    # while it runs, a live stream of it is counted
    with httpx.stream("GET", f"{server.base_url}/responses/{slow.id}", params={"stream": "true"}, timeout=30) as live:
        lines = live.iter_lines()  # kept: dropping the iterator would close the stream
        assert next(lines) == "event: response.created"
        wait_for(lambda: value(scrape(server), "bgmode_sse_streams") == 1, what="one live stream")
    assert c.responses.cancel(slow.id).status == "cancelled"

    after = scrape(server)
    assert value(after, "bgmode_responses_created_total", model="m-bg", mode="background") == 4
    assert value(after, "bgmode_responses_created_total", model="m-fg", mode="foreground") == 1
    assert value(after, "bgmode_responses_created_total", model="m-slow", mode="background") == 1
    assert value(after, "bgmode_responses_finished_total", model="m-bg", status="completed") == 4
    assert value(after, "bgmode_responses_finished_total", model="m-fg", status="completed") == 1
    assert value(after, "bgmode_responses_finished_total", model="m-slow", status="cancelled") == 1
    # nothing runs or waits any more: the gauges are back to 0
    wait_for(lambda: value(scrape(server), "bgmode_sse_streams") == 0, what="no live stream")
    assert value(after, "bgmode_worker_running") == 0
    assert value(after, "bgmode_worker_slots") == 4

    # store-wide counts are cached for up to 1 s: poll until the scrape shows the end state
    def settled() -> bool:
        s = scrape(server)
        return (
            value(s, "bgmode_store_responses", status="in_progress") == 0
            and value(s, "bgmode_store_responses", status="queued") == 0
            and value(s, "bgmode_store_responses", status="completed") == 5  # the foreground one is stored too
            and value(s, "bgmode_store_responses", status="cancelled") == 1
        )

    wait_for(settled, what="the store-wide gauges to show 5 completed, 1 cancelled, none running or queued")
    # histograms have samples
    assert value(after, "bgmode_response_queue_seconds_count", model="m-bg") == 4
    assert value(after, "bgmode_response_first_token_seconds_count", model="m-bg") == 4
    assert value(after, "bgmode_response_first_token_seconds_count", model="m-fg") == 1
    assert value(after, "bgmode_response_duration_seconds_count", model="m-bg", status="completed") == 4
    assert value(after, "bgmode_response_duration_seconds_count", model="m-slow", status="cancelled") == 1
    assert value(after, "bgmode_response_duration_seconds_sum", model="m-bg", status="completed") > 0
    # tokens: the simulated outputs' usage
    assert value(after, "bgmode_tokens_total", model="m-bg", direction="output") == 3 * 12 + 5
    assert value(after, "bgmode_tokens_total", model="m-fg", direction="output") == 7
    assert value(after, "bgmode_tokens_total", model="m-bg", direction="input") > 0
    # the flusher persisted every background event (foreground responses have no event log)
    assert value(after, "bgmode_events_persisted_total") >= 4 * 10
    assert value(after, "bgmode_store_write_seconds_count") > 0
    assert value(after, "bgmode_store_write_errors_total") == 0
    # requests by route template (never a raw path) and status
    creates = value(after, "bgmode_http_requests_total", route="/v1/responses", method="POST", status="200")
    assert (
        creates - value(before, "bgmode_http_requests_total", route="/v1/responses", method="POST", status="200") == 6
    )
    polls = value(after, "bgmode_http_requests_total", route="/v1/responses/{response_id}", method="GET", status="200")
    assert polls >= 3 + 1  # the polls, the live stream
    assert (
        value(
            after, "bgmode_http_requests_total", route="/v1/responses/{response_id}/cancel", method="POST", status="200"
        )
        == 1
    )
    assert not any(slow.id in dict(labels).get("route", "") for _, labels in after)
    assert value(after, "bgmode_http_request_duration_seconds_count", route="/v1/responses", method="POST") >= 6


def test_errors_are_counted_by_status_and_unknown_paths_by_no_route(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--workers", "0"]).start()
    c = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    for _ in range(2):
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve("resp_missing")
    httpx.get(f"{server.url}/no/such/path/resp_secret")
    httpx.put(f"{server.base_url}/models")
    s = scrape(server)
    assert value(s, "bgmode_http_requests_total", route="/v1/responses/{response_id}", method="GET", status="404") == 2
    assert value(s, "bgmode_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(s, "bgmode_http_requests_total", route="/v1/models", method="PUT", status="405") == 1
    assert "resp_secret" not in httpx.get(f"{server.url}/metrics").text


def test_upstream_errors_are_counted_by_backend_and_kind(make_server: type[BgmodeServer]) -> None:
    upstream = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    server = make_server(
        args=["--upstream-url", upstream, "--upstream-api", "chat", "--upstream-option", "max_retries=0"]
    ).start()
    c = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    r = c.responses.create(model="m", input="hi")
    assert r.status == "failed"
    s = scrape(server)
    assert value(s, "bgmode_upstream_errors_total", backend=f"{upstream}/chat/completions", kind="unreachable") == 1
    assert value(s, "bgmode_responses_finished_total", model="m", status="failed") == 1


def test_metrics_need_a_key_when_keys_are_configured(make_server: type[BgmodeServer]) -> None:
    keyed = make_server(args=["--api-keys", "key-alice:alice,key-bob:bob"]).start()
    r = httpx.get(f"{keyed.url}/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = httpx.get(f"{keyed.url}/metrics", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert value(scrape(keyed, "key-bob"), "bgmode_worker_slots") == 16
    keyed.kill()
    public = make_server(args=["--api-keys", "key-alice:alice", "--metrics-public"]).start()
    assert value(scrape(public), "bgmode_worker_slots") == 16
    # the rest of the API still needs a key
    assert httpx.get(f"{public.base_url}/models").status_code == 401


@pytest.mark.postgres
def test_store_wide_gauges_agree_across_processes(pg_database_url: str, make_server: type[BgmodeServer]) -> None:
    # API-only processes: what they create stays queued, whichever process created it
    a = make_server(pg_database_url, args=["--workers", "0"]).start()
    b = make_server(pg_database_url, args=["--workers", "0"]).start()
    ca = OpenAI(base_url=a.base_url, api_key="k", max_retries=0)
    cb = OpenAI(base_url=b.base_url, api_key="k", max_retries=0)
    ids = [ca.responses.create(model="m", input="x", background=True).id for _ in range(3)]
    ids += [cb.responses.create(model="m", input="x", background=True).id for _ in range(2)]
    sa, sb = scrape(a), scrape(b)
    assert value(sa, "bgmode_store_responses", status="queued") == 5
    assert value(sb, "bgmode_store_responses", status="queued") == 5
    # per-process counters count only what each process did
    assert value(sa, "bgmode_responses_created_total", model="m", mode="background") == 3
    assert value(sb, "bgmode_responses_created_total", model="m", mode="background") == 2
    # cancelled through b: both processes see the new counts (within the 1 s cache)
    for rid in ids[:2]:
        assert cb.responses.cancel(rid).status == "cancelled"

    def agree() -> bool:
        sa, sb = scrape(a), scrape(b)
        return all(
            value(s, "bgmode_store_responses", status="queued") == 3
            and value(s, "bgmode_store_responses", status="cancelled") == 2
            for s in (sa, sb)
        )

    wait_for(agree, timeout=10, what="both processes to report 3 queued and 2 cancelled")
    assert value(scrape(b), "bgmode_responses_finished_total", model="m", status="cancelled") == 2
    assert total(scrape(a), "bgmode_responses_finished_total") == 0


def test_a_client_that_hangs_up_stops_its_stream_and_the_response_runs_on(make_server: type[BgmodeServer]) -> None:
    """Both stream kinds (a streamed background create, and `GET ?stream=true`) stop being sent
    as soon as their client goes away, while the response itself keeps running."""
    server = make_server(args=["--workers", "2"]).start()
    c = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    body = {"model": "m", "input": "hi", "background": True, "stream": True, "metadata": sim(100000, 5)}
    with httpx.stream("POST", f"{server.base_url}/responses", json=body, timeout=30) as created:
        lines = created.iter_lines()
        assert next(lines) == "event: response.created"
        rid = json.loads(next(lines).removeprefix("data: "))["response"]["id"]
        wait_for(lambda: value(scrape(server), "bgmode_sse_streams") == 1, what="the create's stream")
    wait_for(lambda: value(scrape(server), "bgmode_sse_streams") == 0, what="the create's stream ended")
    with httpx.stream("GET", f"{server.base_url}/responses/{rid}", params={"stream": "true"}, timeout=30) as live:
        lines = live.iter_lines()
        assert next(lines) == "event: response.created"
        wait_for(lambda: value(scrape(server), "bgmode_sse_streams") == 1, what="the GET stream")
    wait_for(lambda: value(scrape(server), "bgmode_sse_streams") == 0, what="the GET stream ended")
    assert c.responses.retrieve(rid).status == "in_progress"  # only the streams stopped
    assert c.responses.cancel(rid).status == "cancelled"
