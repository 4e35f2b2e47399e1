"""Several `bgmode serve` processes on one store (a SQLite file, a PostgreSQL database),
driven with the openai SDK.

Any process serves any response: created on one, run by whichever worker claims it,
retrieved, streamed (replayed and followed live) and cancelled through another.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from tests.sdk import check_log, deltas, replay, seqs
from tests.serving import BgmodeServer

pytest_plugins = ("tests.pg",)

# Tests take `store_url` before `make_server`: fixtures are torn down in reverse, so the
# servers are killed before their database is dropped.


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One store every server of the test shares."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("pg_database_url"))


def sim(tokens: int, delay_ms: int) -> dict[str, str]:
    return {"sim_output_tokens": str(tokens), "sim_token_delay_ms": str(delay_ms)}


def client_for(server: BgmodeServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=60)


def wait_status(client: OpenAI, rid: str, statuses: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = client.responses.retrieve(rid).status
        assert status is not None
        if status in statuses:
            return status
        assert time.monotonic() < deadline, f"{rid} still {status}"
        time.sleep(0.05)  # polling a status, bounded


def test_created_on_one_server_served_by_another(store_url: str, make_server: type[BgmodeServer]) -> None:
    a = make_server(store_url, args=["--workers", "4"]).start()
    b = make_server(store_url, args=["--workers", "4"]).start()
    ca, cb = client_for(a), client_for(b)
    ids = [
        ca.responses.create(model="m", input=f"hello {i}", background=True, metadata=sim(30, 2)).id for i in range(12)
    ]
    for rid in ids:
        events = check_log(cb, rid)[1]  # B follows, wherever it runs
        assert events[-1].type == "response.completed"
        got = cb.responses.retrieve(rid)
        assert got.status == "completed"
        assert got.output_text == deltas(events) != ""
        assert ca.responses.retrieve(rid).output_text == got.output_text


def test_stream_on_b_replays_and_follows_a_response_running_on_a(
    store_url: str, make_server: type[BgmodeServer]
) -> None:
    a = make_server(store_url, args=["--workers", "2"]).start()
    b = make_server(store_url, args=["--workers", "0"]).start()  # so B can only follow through the store
    ca, cb = client_for(a), client_for(b)
    r = ca.responses.create(model="m", input="tell me a story", background=True, metadata=sim(150, 10))
    # B: read the first events of a live stream, then resume after them on B
    with cb.responses.retrieve(r.id, stream=True) as s:
        head: list[Any] = []
        for e in s:
            head.append(e)
            if e.type == "response.output_text.delta":
                break
    assert seqs(head) == list(range(len(head)))
    n = head[-1].sequence_number
    tail = replay(cb, r.id, after=n)
    assert seqs(tail) == list(range(n + 1, n + 1 + len(tail)))
    assert tail[-1].type == "response.completed"
    full = check_log(cb, r.id)[1]
    assert seqs(full) == seqs(head) + seqs(tail)
    assert deltas(full) == deltas(head) + deltas(tail) == cb.responses.retrieve(r.id).output_text


def test_cancel_through_another_server(store_url: str, make_server: type[BgmodeServer]) -> None:
    a = make_server(store_url, args=["--workers", "1"]).start()
    b = make_server(store_url, args=["--workers", "0"]).start()
    ca, cb = client_for(a), client_for(b)
    running = ca.responses.create(model="m", input="long", background=True, metadata=sim(5000, 10))
    queued = ca.responses.create(model="m", input="waits", background=True, metadata=sim(10, 1))
    wait_status(cb, running.id, {"in_progress"})
    assert cb.responses.retrieve(queued.id).status == "queued"  # A's only worker slot is busy
    # queued: cancelled in the store at once
    assert cb.responses.cancel(queued.id).status == "cancelled"
    # running on A: B flags it, A's worker learns of it and finishes it cancelled
    assert cb.responses.cancel(running.id).status == "cancelled"
    for rid in (queued.id, running.id):
        events = check_log(cb, rid)[1]
        assert events[-1].type == "response.failed" and events[-1].response.status == "cancelled"
        assert ca.responses.retrieve(rid).status == "cancelled"
    # A's worker is free again and picks up new work
    later = ca.responses.create(model="m", input="after", background=True, metadata=sim(10, 1))
    assert check_log(cb, later.id)[1][-1].type == "response.completed"


def test_a_killed_worker_process_is_settled_by_another(store_url: str, make_server: type[BgmodeServer]) -> None:
    fast = ["--lease-seconds", "1.5"]
    a = make_server(store_url, args=["--workers", "2", *fast]).start()
    ca = client_for(a)
    started = [
        ca.responses.create(model="m", input="long", background=True, metadata=sim(5000, 10)).id for _ in range(2)
    ]
    waiting = [ca.responses.create(model="m", input="short", background=True, metadata=sim(20, 1)).id for _ in range(3)]
    for rid in started:
        wait_status(ca, rid, {"in_progress"})
    b = make_server(store_url, args=["--workers", "0", *fast]).start()  # B runs nothing
    cb = client_for(b)
    assert {cb.responses.retrieve(rid).status for rid in waiting} == {"queued"}
    a.kill()
    c = make_server(store_url, args=["--workers", "4", *fast]).start()
    assert c.proc is not None
    # C reaps A's lost responses (output had begun: failed) and runs the queued ones
    for rid in started:
        events = check_log(cb, rid)[1]
        assert events[-1].type == "response.failed"
        assert cb.responses.retrieve(rid).status == "failed"
    for rid in waiting:
        assert check_log(cb, rid)[1][-1].type == "response.completed"


def test_api_only_server_with_a_separate_worker_server(store_url: str, make_server: type[BgmodeServer]) -> None:
    api = make_server(store_url, args=["--workers", "0"]).start()
    capi = client_for(api)
    ids = [
        capi.responses.create(model="m", input=f"job {i}", background=True, metadata=sim(20, 2)).id for i in range(10)
    ]
    assert {capi.responses.retrieve(rid).status for rid in ids} == {"queued"}  # nobody runs them yet
    make_server(store_url, args=["--workers", "3"]).start()
    for rid in ids:  # all run on the worker server; followed through the API-only one
        assert check_log(capi, rid)[1][-1].type == "response.completed"
        assert capi.responses.retrieve(rid).status == "completed"
