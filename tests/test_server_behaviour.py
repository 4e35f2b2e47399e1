"""README promises with no other test: partial output while running, no growth after a cancel,
every `serve` flag's environment variable, Idempotency-Key scoped per API key."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import click
import httpx
from openai import OpenAI

from bgmode.cli import serve
from tests.sdk import until_first_delta
from tests.serving import BgmodeServer, free_port

SLOW = {"sim_output_tokens": "3000", "sim_token_delay_ms": "10"}


def test_poll_returns_partial_output_while_in_progress(client: OpenAI) -> None:
    rid, _, _ = until_first_delta(client, SLOW, input="partial")  # the first write carries the snapshot
    polled = client.responses.retrieve(rid)
    assert polled.status == "in_progress"
    assert polled.output_text  # partial text, not []
    client.responses.cancel(rid)
    assert client.responses.retrieve(rid).output_text.startswith(polled.output_text)


def test_output_stops_growing_once_cancelled(client: OpenAI) -> None:
    rid, _, stream = until_first_delta(client, SLOW, input="grow")
    cancelled = client.responses.cancel(rid)
    assert cancelled.status == "cancelled"
    list(stream)  # the stream ends after the terminal event
    with client.responses.retrieve(rid, stream=True) as replayed:
        events = list(replayed)
    final = client.responses.retrieve(rid)
    assert final.output_text == cancelled.output_text
    assert final.output_text == "".join(e.delta for e in events if e.type == "response.output_text.delta")


def test_every_serve_flag_has_an_environment_variable() -> None:
    options = [p for p in serve.params if isinstance(p, click.Option)]
    assert len(options) >= 20
    for opt in options:
        assert isinstance(opt.envvar, str) and opt.envvar.startswith("BGMODE_"), opt.name
        assert opt.show_envvar, opt.name
    helptext = subprocess.run(
        [sys.executable, "-m", "bgmode", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for opt in options:
        assert str(opt.envvar) in helptext.replace("\n", " ").replace("  ", " ") or str(opt.envvar)[:20] in helptext


def test_a_server_configured_only_by_environment(tmp_path: object) -> None:
    port = free_port()
    env = {
        **os.environ,
        "BGMODE_PORT": str(port),
        "BGMODE_STORE_URL": f"sqlite:///{tmp_path}/env.db",
        "BGMODE_WORKERS": "0",
        "BGMODE_API_KEYS": "key-a:alpha",
        "BGMODE_MAX_BODY_BYTES": "4000",
        "BGMODE_MAX_QUEUED": "1",
        "BGMODE_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen([sys.executable, "-m", "bgmode", "serve"], env=env, stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # readiness polling, not synchronising test logic
            assert proc.poll() is None, "bgmode serve exited"
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        auth = {"Authorization": "Bearer key-a"}
        assert httpx.post(f"{base}/v1/responses", json={"model": "m", "input": "x"}).status_code == 401
        big = {"model": "m", "input": "x" * 5000, "background": True}
        assert httpx.post(f"{base}/v1/responses", json=big, headers=auth).status_code == 413
        first = httpx.post(f"{base}/v1/responses", json={"model": "m", "input": "x", "background": True}, headers=auth)
        assert first.status_code == 200 and first.json()["status"] == "queued"  # no workers: stays queued
        second = httpx.post(f"{base}/v1/responses", json={"model": "m", "input": "y", "background": True}, headers=auth)
        assert second.status_code == 429 and "Retry-After" in second.headers
    finally:
        proc.kill()
        proc.wait(10)


def test_idempotency_key_is_scoped_per_api_key(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--api-keys", "key-a:alpha,key-b:beta"]).start()
    a = OpenAI(base_url=server.base_url, api_key="key-a", max_retries=0)
    b = OpenAI(base_url=server.base_url, api_key="key-b", max_retries=0)
    headers = {"Idempotency-Key": "same-key"}
    first = a.responses.create(model="m", input="x", background=True, extra_headers=headers)
    again = a.responses.create(model="m", input="x", background=True, extra_headers=headers)
    other = b.responses.create(model="m", input="x", background=True, extra_headers=headers)
    assert again.id == first.id
    assert other.id != first.id


def test_every_failed_or_incomplete_response_logs_one_line(make_server: type[BgmodeServer]) -> None:
    server = make_server().start()
    c = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    bg = c.responses.create(model="m-bg", input="x", background=True, metadata={"sim_fail_after_tokens": "2"})
    with c.responses.retrieve(bg.id, stream=True) as s:
        list(s)
    fg = c.responses.create(model="m-fg", input="x", metadata={"sim_fail_after_tokens": "1"})
    cut = c.responses.create(model="m-cut", input="x", max_output_tokens=16, metadata={"sim_output_tokens": "50"})
    assert (c.responses.retrieve(bg.id).status, fg.status, cut.status) == ("failed", "failed", "incomplete")
    server.terminate()
    log = server.log()
    for rid, model in ((bg.id, "m-bg"), (fg.id, "m-fg"), (cut.id, "m-cut")):
        lines = [line for line in log.splitlines() if rid in line]
        assert len(lines) == 1, lines
        assert f"model={model}" in lines[0] and "route=sim" in lines[0]
    assert "error=server_error: The simulated model failed after 2 tokens" in log
    assert "reason=max_output_tokens" in log
