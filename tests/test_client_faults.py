"""The client against a flaky network: a fault-injecting proxy in front of a real `bgmode serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.faulty_proxy import FaultyProxy
from tests.serving import BgmodeServer
from tests.test_client_helpers import bgmode

SOME = ("--metadata", "sim_output_tokens=40", "--metadata", "sim_token_delay_ms=5")


@pytest.fixture
def proxy(bgmode_server: BgmodeServer) -> Iterator[FaultyProxy]:
    with FaultyProxy(bgmode_server.url) as p:
        yield p


def _run(proxy: FaultyProxy, *extra: str) -> list[str]:
    return ["run", "--base-url", proxy.base_url, "--poll-seconds", "0.2", "--prompt", "Say hello.", *extra]


def test_request_shape_is_the_skills(proxy: FaultyProxy) -> None:
    r = bgmode(*_run(proxy, "--model", "m1", "--reasoning-effort", "high", "--verbosity", "low", *SOME))
    assert r.code == 0, r.stderr
    (create,) = proxy.matching("POST", "/v1/responses")
    body = create.json()
    assert body["model"] == "m1"
    assert body["input"] == "Say hello."
    assert body["background"] is True
    assert body["text"] == {"format": {"type": "text"}, "verbosity": "low"}
    assert body["reasoning"] == {"effort": "high"}
    assert "store" not in body and "tools" not in body and "stream" not in body
    assert create.headers["idempotency-key"]


def test_503_while_polling_is_retried_until_it_passes(proxy: FaultyProxy) -> None:
    proxy.fail(4, 503, method="GET", path_contains="/v1/responses/")
    r = bgmode(*_run(proxy, *SOME, "--show-output-text"))
    assert r.code == 0, r.stderr
    retries = r.all("retry")
    assert len(retries) == 4
    rid = r.one("submitted")["response_id"]
    assert all(e["status_code"] == 503 and e["operation"] == "retrieve" for e in retries)
    assert all(e["response_id"] == rid for e in retries)
    assert [e["attempt"] for e in retries] == [1, 2, 3, 4]
    final = r.one("final")
    assert final["status"] == "completed" and final["output_text"]


def test_retry_after_is_honoured(proxy: FaultyProxy) -> None:
    proxy.fail(1, 429, method="GET", path_contains="/v1/responses/", retry_after="0.3")
    r = bgmode(*_run(proxy, *SOME))
    assert r.code == 0, r.stderr
    (retry,) = r.all("retry")
    assert retry["status_code"] == 429 and retry["delay_seconds"] == 0.3


def test_timeout_bounds_the_retries(proxy: FaultyProxy) -> None:
    proxy.fail(10_000, 503, method="GET", path_contains="/v1/responses/")
    r = bgmode(*_run(proxy, *SOME, "--timeout", "1.5"))
    assert r.code == 6, r.stderr
    assert r.all("retry")
    assert r.one("timeout")["response_id"] == r.one("submitted")["response_id"]


def test_lost_create_answer_is_retried_with_the_same_idempotency_key(proxy: FaultyProxy) -> None:
    # the server creates the job, but the client only sees a 502
    proxy.fail(1, 502, method="POST", path_contains="/v1/responses", forward=True)
    r = bgmode(*_run(proxy, *SOME))
    assert r.code == 0, r.stderr
    creates = proxy.matching("POST", "/v1/responses")
    assert len(creates) == 2
    assert creates[0].headers["idempotency-key"] == creates[1].headers["idempotency-key"]
    first_id = json.loads(creates[0].upstream_body)["id"]
    assert r.one("submitted")["response_id"] == first_id  # no duplicate job
    assert r.one("retry")["operation"] == "create"


def test_rejected_create_is_not_retried(proxy: FaultyProxy) -> None:
    r = bgmode(*_run(proxy, "--max-output-tokens", "1"))
    assert r.code == 7
    assert len(proxy.matching("POST", "/v1/responses")) == 1


@pytest.mark.parametrize("mode", ["abort", "close"])
def test_broken_stream_resumes_and_finishes_with_the_full_text(proxy: FaultyProxy, mode: str) -> None:
    # the first two streams are cut after a few events; the third runs to the end
    proxy.cut_streams(2, after_events=8, mode=mode)
    r = bgmode(
        *_run(proxy, "--stream", "--show-output-text"),
        "--metadata",
        "sim_output_tokens=60",
        "--metadata",
        "sim_token_delay_ms=10",
    )
    assert r.code == 0, r.stderr
    rid = r.one("submitted")["response_id"]
    resumes = r.all("stream_resume")
    assert len(resumes) == 2
    assert resumes[0]["starting_after"] == 7  # 8 events: sequence numbers 0..7
    gets = proxy.matching("GET", f"/v1/responses/{rid}")
    assert [g.query.get("starting_after") for g in gets][:1] == [["7"]]
    final = r.one("final")
    assert final["status"] == "completed"
    deltas = r.all("delta")
    seqs = [d["sequence_number"] for d in deltas]
    assert seqs == sorted(set(seqs))  # nothing twice
    assert "".join(d["text"] for d in deltas) == final["output_text"]
    # identical to what a poll returns
    polled = bgmode("get", rid, "--base-url", proxy.base_url, "--show-output-text")
    assert polled.one("response")["output_text"] == final["output_text"]


def test_stream_resume_refused_then_polling_finishes(proxy: FaultyProxy) -> None:
    proxy.cut_streams(1, after_events=5)
    proxy.fail(1, 400, method="GET", path_contains="/v1/responses/resp_")
    r = bgmode(*_run(proxy, "--stream", "--show-output-text", *SOME))
    assert r.code == 0, r.stderr
    assert r.one("stream_fallback")
    assert "poll" in r.names()
    final = r.one("final")
    assert final["status"] == "completed" and final["output_text"]


def test_server_down_while_streaming_is_retried(proxy: FaultyProxy) -> None:
    proxy.cut_streams(1, after_events=5)
    proxy.fail(3, 503, method="GET", path_contains="/v1/responses/resp_")
    r = bgmode(*_run(proxy, "--stream", "--show-output-text", *SOME))
    assert r.code == 0, r.stderr
    assert [e["operation"] for e in r.all("retry")] == ["stream"] * 3
    final = r.one("final")
    assert "".join(d["text"] for d in r.all("delta")) == final["output_text"]


def test_a_server_that_ignores_starting_after_never_shows_a_delta_twice(proxy: FaultyProxy) -> None:
    """Every resume replays the log from 0; the client skips what it has already printed."""
    proxy.ignore_starting_after = True
    proxy.cut_streams(2, after_events=12, mode="abort")
    r = bgmode(
        *_run(proxy, "--stream", "--show-output-text"),
        "--metadata",
        "sim_output_tokens=60",
        "--metadata",
        "sim_token_delay_ms=10",
    )
    assert r.code == 0, r.stderr
    rid = r.one("submitted")["response_id"]
    resumes = proxy.matching("GET", f"/v1/responses/{rid}")
    # the client asked to resume after what it had, and the server replayed from the start
    assert [g.query["starting_after"] for g in resumes] == [["11"], ["11"]]
    assert all(g.outcome in ("forwarded", "cut") for g in resumes)
    final = r.one("final")
    deltas = r.all("delta")
    seqs = [d["sequence_number"] for d in deltas]
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
    assert "".join(d["text"] for d in deltas) == final["output_text"]
    assert len(r.all("submitted")) == 1
    statuses = [e["status"] for e in r.all("status")]
    assert statuses == list(dict.fromkeys(statuses)) and statuses[-1] == "completed"  # none twice


@pytest.mark.parametrize("status", [408, 409])
def test_408_and_409_on_create_are_retried_with_the_same_key(proxy: FaultyProxy, status: int) -> None:
    # the server made the job each time, but the client only saw the error twice
    proxy.fail(2, status, method="POST", path_contains="/v1/responses", forward=True)
    r = bgmode(*_run(proxy, *SOME))
    assert r.code == 0, r.stderr
    creates = proxy.matching("POST", "/v1/responses")
    assert len(creates) == 3
    assert len({c.headers["idempotency-key"] for c in creates}) == 1
    made = {json.loads(c.upstream_body)["id"] for c in creates}
    rid = r.one("submitted")["response_id"]
    assert made == {rid}  # one job on the server, whatever the client heard
    retries = r.all("retry")
    assert [(e["operation"], e["status_code"], e["attempt"]) for e in retries] == [
        ("create", status, 1),
        ("create", status, 2),
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_a_create_is_tried_at_most_6_times(proxy: FaultyProxy, stream: bool) -> None:
    proxy.fail(100, 408, method="POST", path_contains="/v1/responses", retry_after="0.01")
    r = bgmode(*_run(proxy, *SOME, *(["--stream"] if stream else [])))
    assert r.code == 7, r.stderr
    assert len(proxy.matching("POST", "/v1/responses")) == 6
    assert len(r.all("retry")) == 5
    err = r.one("error")
    assert err["stage"] == "create" and err["status_code"] == 408
    assert "submitted" not in r.names()
    jobs = bgmode("jobs").all("job")
    assert [(j["response_id"], j["status"]) for j in jobs] == [(None, "submit_failed")]


def test_resumes_without_progress_3_times_fall_back_to_polling(proxy: FaultyProxy) -> None:
    proxy.cut_streams(1, after_events=6)  # the create's stream: the id and a few events arrive
    proxy.cut_streams(1000, after_events=0)  # every resume is cut before its first event
    r = bgmode(*_run(proxy, "--stream", "--show-output-text", "--timeout", "60", *SOME))
    assert r.code == 0, r.stderr
    rid = r.one("submitted")["response_id"]
    resumes = r.all("stream_resume")
    assert [e["attempt"] for e in resumes] == [1, 2, 3]
    assert all(e["starting_after"] == 5 for e in resumes)
    assert len(proxy.matching("GET", f"/v1/responses/{rid}")) >= 3
    fallback = r.one("stream_fallback")
    assert fallback["reason"].startswith("no progress after resuming")
    names = r.names()
    assert names.index("stream_fallback") > names.index("stream_resume")
    assert names[names.index("stream_fallback") + 1] == "poll"
    final = r.one("final")
    assert final["status"] == "completed" and final["output_text"]
