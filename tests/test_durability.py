"""Crashes (SIGKILL) and graceful shutdown (SIGTERM): no response is lost or left hanging."""

from __future__ import annotations

import signal
import time

import openai
from openai import OpenAI

from tests.sdk import TERMINAL, check_log, replay, until_first_delta
from tests.serving import BgmodeServer

FAST_LEASES = ["--lease-seconds", "1.5"]


def wait_terminal(client: OpenAI, rid: str, timeout: float = 90) -> str:
    """Follow the response's stream, reconnecting if a server is restarting, until it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            replay(client, rid)
            status = client.responses.retrieve(rid).status
            if status in TERMINAL:
                return status
        except (openai.APIConnectionError, openai.InternalServerError):
            time.sleep(0.2)  # the server is restarting; retry the connection
    raise AssertionError(f"{rid} did not finish in {timeout}s")


def test_crash_twice_loses_nothing(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=[*FAST_LEASES, "--workers", "4"]).start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    ids: list[str] = []
    # long runners (output begun when killed), short ones, and a backlog that waits queued
    for i in range(4):
        ids.append(
            client.responses.create(
                model="m",
                input=f"long {i}",
                background=True,
                metadata={"sim_output_tokens": "400", "sim_token_delay_ms": "10"},
            ).id
        )
    for i in range(12):
        ids.append(
            client.responses.create(
                model="m",
                input=f"short {i}",
                background=True,
                metadata={"sim_output_tokens": "30", "sim_token_delay_ms": "5"},
            ).id
        )

    # a stream that will be cut by the crash and resumed on the restarted server
    stream = client.responses.create(
        model="m",
        input="streamed",
        background=True,
        stream=True,
        metadata={"sim_output_tokens": "300", "sim_token_delay_ms": "10"},
    )
    seen = []
    for ev in stream:
        seen.append(ev)
        if len(seen) >= 10:
            break
    streamed_id = seen[0].response.id  # type: ignore[union-attr]
    ids.append(streamed_id)

    server.kill()  # crash 1: long runners and the stream are mid-output
    server.start()
    for i in range(6):
        ids.append(
            client.responses.create(
                model="m",
                input=f"after {i}",
                background=True,
                metadata={"sim_output_tokens": "200", "sim_token_delay_ms": "10"},
            ).id
        )
    # wait until one of the new ones is running, then crash again
    with client.responses.retrieve(ids[-1], stream=True) as s:
        for ev in s:
            if ev.type == "response.in_progress":
                break
    server.kill()  # crash 2: while new responses are running or queued
    server.start()

    # the interrupted stream resumes from its cursor on the new server, consistently
    rest = []
    with client.responses.retrieve(streamed_id, stream=True, starting_after=seen[-1].sequence_number) as s:
        rest = list(s)
    assert rest and rest[0].sequence_number == seen[-1].sequence_number + 1
    whole = seen + rest
    assert [e.sequence_number for e in whole] == list(range(len(whole)))

    statuses = {}
    for rid in ids:
        wait_terminal(client, rid)
        statuses[rid], _ = check_log(client, rid)
    assert statuses[streamed_id] in ("failed", "completed")
    assert set(statuses.values()) <= {"completed", "failed"}
    lost = [rid for rid, st in statuses.items() if st == "failed"]
    for rid in lost:
        r = client.responses.retrieve(rid)
        assert r.error is not None and r.error.code == "server_error"
        assert "lost" in r.error.message
    assert list(statuses.values()).count("completed") >= 12  # the short ones and the queued backlog ran


def test_sigterm_finishes_running_work_and_keeps_the_queue(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--workers", "1", "--grace-seconds", "30"]).start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    stream = client.responses.create(
        model="m",
        input="finishing",
        background=True,
        stream=True,
        metadata={"sim_output_tokens": "60", "sim_token_delay_ms": "20"},
    )
    first = []
    for ev in stream:
        first.append(ev)
        if ev.type == "response.output_text.delta":
            break
    running = first[0].response.id  # type: ignore[union-attr]
    waiting = client.responses.create(model="m", input="waiting", background=True).id

    assert server.terminate() in (0, -15)  # uvicorn re-raises SIGTERM after its graceful shutdown
    rest = list(stream)  # the live stream got its events up to that point and closed cleanly
    seqs = [e.sequence_number for e in first + rest]
    assert seqs == list(range(len(seqs)))

    server.start()
    assert client.responses.retrieve(running).status == "completed"
    assert wait_terminal(client, waiting) == "completed"  # handed back, then run after the restart
    check_log(client, running)
    check_log(client, waiting)


def test_sigterm_after_grace_requeues_unstarted_and_fails_started(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--workers", "1", "--grace-seconds", "0.5"]).start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    slow = {"sim_output_tokens": "5000", "sim_token_delay_ms": "20"}
    stream = client.responses.create(model="m", input="too long", background=True, stream=True, metadata=slow)
    started = ""
    for ev in stream:
        if ev.type == "response.created":
            started = ev.response.id
        if ev.type == "response.output_text.delta":
            break
    stream.close()
    queued = client.responses.create(model="m", input="still queued", background=True).id

    assert server.terminate() in (0, -15)
    server.start()
    # output had begun, so it cannot move to another worker: it ends failed, saying why
    r = client.responses.retrieve(started)
    assert r.status == "failed"
    assert r.error is not None and r.error.code == "server_error" and "shut down" in r.error.message
    check_log(client, started)
    # the one that never started is run after the restart
    assert wait_terminal(client, queued) == "completed"


def test_restart_on_the_same_host_settles_a_dead_process_at_once(make_server: type[BgmodeServer]) -> None:
    """With hour-long leases, only knowing that the old process is gone (same host, pid not
    alive) lets the restarted server settle its responses: each ends as its state demands."""
    server = make_server(args=["--lease-seconds", "3600", "--workers", "2"]).start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    # mid-output: tokens every 10 ms
    mid_id, seen, _ = until_first_delta(client, {"sim_output_tokens": "5000", "sim_token_delay_ms": "10"}, input="mid")
    # claimed, no output yet: its first token is a minute away
    idle = client.responses.create(
        model="m",
        input="idle",
        background=True,
        stream=True,
        metadata={"sim_output_tokens": "1", "sim_token_delay_ms": "60000"},
    )
    idle_id = ""
    for ev in idle:
        if ev.type == "response.created":
            idle_id = ev.response.id
        if ev.type == "response.in_progress":
            break
    # queued behind the two busy slots
    queued = client.responses.create(model="m", input="queued", background=True, metadata={"sim_output_tokens": "3"})
    assert client.responses.retrieve(queued.id).status == "queued"

    server.kill()
    server.start()

    # mid-output: failed at once (not after the hour-long lease), keeping what was streamed
    assert wait_terminal(client, mid_id, timeout=60) == "failed"
    failed = client.responses.retrieve(mid_id)
    assert failed.error is not None and "lost" in failed.error.message
    assert failed.output_text.startswith("".join(e.delta for e in seen if e.type == "response.output_text.delta"))
    # claimed without output: requeued and run by the new process, which can cancel it
    assert client.responses.cancel(idle_id).status == "cancelled"
    # queued: runs to completion
    assert wait_terminal(client, queued.id, timeout=60) == "completed"
    for rid in (mid_id, idle_id, queued.id):
        check_log(client, rid)


def test_cancel_requested_then_crash_ends_cancelled(make_server: type[BgmodeServer]) -> None:
    """A cancel committed while the worker could not act on it (paused, then killed) is honoured
    by the process that settles the response: it ends `cancelled`, keeping its output."""
    worker = make_server(args=["--lease-seconds", "3600"]).start()
    api = make_server(args=["--workers", "0"]).start()  # same SQLite file, API only
    cw = OpenAI(base_url=worker.base_url, api_key="k", max_retries=0)
    ca = OpenAI(base_url=api.base_url, api_key="k", max_retries=0)
    rid, seen, _ = until_first_delta(cw, {"sim_output_tokens": "5000", "sim_token_delay_ms": "10"}, input="x")
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGSTOP)  # the worker can no longer hear about the cancel
    pending = ca.responses.cancel(rid)  # committed; nobody settles it yet
    assert pending.status == "in_progress"
    worker.kill()
    worker.start()
    assert wait_terminal(ca, rid, timeout=60) == "cancelled"
    final = ca.responses.retrieve(rid)
    assert final.output_text.startswith(seen[-1].delta)  # type: ignore[attr-defined]
    check_log(ca, rid)
