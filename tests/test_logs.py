"""Structured logs of `bgmode serve`: every line it writes is one JSON object with `--log-format
json`; a line per request (method, route template, status, duration, tenant, request id) and a
line per response state change; `X-Request-Id` is echoed (the client's if sane) on every
response; keys are never logged."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.serving import BgmodeServer

KEY = "sk-secret-key-alice-0123456789"


def log_lines(server: BgmodeServer) -> list[dict[str, Any]]:
    assert server.log_path is not None
    raw = server.log_path.read_text().splitlines()
    assert raw
    out = []
    for line in raw:
        obj = json.loads(line)  # every line is JSON
        assert isinstance(obj, dict), line
        assert {"ts", "level", "logger", "msg"} <= obj.keys(), line
        out.append(obj)
    return out


def wait_status(c: OpenAI, rid: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while c.responses.retrieve(rid).status != status:
        assert time.monotonic() < deadline, f"{rid} never became {status}"
        time.sleep(0.05)  # polling a status, bounded


def test_json_lines_for_requests_and_state_changes(make_server: type[BgmodeServer]) -> None:
    server = make_server(
        args=["--api-keys", f"{KEY}:alice", "--log-format", "json", "--log-level", "info", "--workers", "2"]
    ).start()
    c = OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    raw = c.responses.with_raw_response.create(
        model="m-log", input="hi", background=True, extra_headers={"X-Request-Id": "client-req-1"}
    )
    assert raw.headers["x-request-id"] == "client-req-1"
    r = raw.parse()
    wait_status(c, r.id, "completed")
    # a request id that is not sane (too long, or with spaces) is replaced by a new one
    for bad in ("x" * 129, "has space"):
        got = httpx.get(
            f"{server.base_url}/responses/{r.id}", headers={"Authorization": f"Bearer {KEY}", "X-Request-Id": bad}
        )
        assert got.status_code == 200 and got.headers["x-request-id"] not in (bad, "")
    # the id is echoed on errors, on the fast paths and on Starlette's routes alike
    for method, path in (("GET", f"/v1/responses/{r.id}"), ("POST", "/v1/responses"), ("GET", "/v1/models")):
        res = httpx.request(
            method, server.url + path, headers={"X-Request-Id": "err-req", "Authorization": "Bearer nope"}
        )
        assert res.status_code == 401 and res.headers["x-request-id"] == "err-req"
    missing = httpx.get(f"{server.url}/nowhere", headers={"X-Request-Id": "nf-req"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "nf-req"
    # the SDK exposes it to its users
    with pytest.raises(openai.NotFoundError) as exc:
        c.responses.retrieve("resp_nope", extra_headers={"X-Request-Id": "sdk-req"})
    assert exc.value.request_id == "sdk-req"
    # a streamed create
    with c.responses.create(model="m-log", input="hi", background=True, stream=True) as s:
        streamed = list(s)
    sid = streamed[0].response.id  # type: ignore[union-attr]
    server.terminate()

    lines = log_lines(server)
    text = server.log_path.read_text() if server.log_path else ""
    assert KEY not in text and "Bearer" not in text  # the key is never logged
    access = [x for x in lines if x["logger"] == "bgmode.access"]
    create = next(x for x in access if x["request_id"] == "client-req-1")
    assert create["method"] == "POST" and create["route"] == "/v1/responses" and create["status"] == 200
    assert create["tenant"] == "alice" and isinstance(create["duration_ms"], float | int)
    assert create["level"] == "info"
    err = [x for x in access if x["request_id"] == "err-req"]
    assert sorted((x["route"], x["status"]) for x in err) == [
        ("/v1/models", 401),
        ("/v1/responses", 401),
        ("/v1/responses/{response_id}", 401),
    ]
    assert all(x["tenant"] is None for x in err)
    assert next(x for x in access if x["request_id"] == "nf-req")["route"] == "unmatched"
    sdk = next(x for x in access if x["request_id"] == "sdk-req")
    assert (sdk["route"], sdk["status"], sdk["tenant"]) == ("/v1/responses/{response_id}", 404, "alice")
    assert not any(r.id in x["route"] for x in access)  # templates, never raw paths
    # one line per state change, in order: queued (create), in_progress (claim), completed
    for rid in (r.id, sid):
        states = [x for x in lines if x["logger"] == "bgmode.response" and x.get("response_id") == rid]
        assert [x["status"] for x in states] == ["queued", "in_progress", "completed"], states
        assert all(x["model"] == "m-log" and x["tenant"] == "alice" for x in states)
        assert states[0]["attempt"] == 0 and states[1]["attempt"] == 1 and states[2]["attempt"] == 1
        assert states[1]["worker"] and states[2]["worker"] == states[1]["worker"]
        assert states[2]["duration_ms"] > 0
    # uvicorn's own lines are JSON too (they went through the same handler)
    assert any(x["logger"].startswith("uvicorn") for x in lines)


def test_failed_responses_log_a_warning_with_the_error(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--log-format", "json", "--log-level", "info"]).start()
    c = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    r = c.responses.create(model="m", input="x", background=True, metadata={"sim_fail_after_tokens": "2"})
    wait_status(c, r.id, "failed")
    fg = c.responses.create(model="m-fg", input="x", metadata={"sim_fail_after_tokens": "1"})
    assert fg.status == "failed"
    server.terminate()
    lines = log_lines(server)
    bg = [x for x in lines if x.get("response_id") == r.id and x.get("status") == "failed"]
    assert len(bg) == 1 and bg[0]["level"] == "warning"
    assert bg[0]["error_code"] == "server_error" and "after 2 tokens" in bg[0]["error"]
    fgl = [x for x in lines if x.get("response_id") == fg.id]
    assert [x["status"] for x in fgl] == ["failed"] and fgl[0]["level"] == "warning"


def test_no_access_log_and_text_format(make_server: type[BgmodeServer]) -> None:
    quiet = make_server(args=["--log-format", "json", "--log-level", "info", "--no-access-log"]).start()
    c = OpenAI(base_url=quiet.base_url, api_key="k", max_retries=0)
    r = c.responses.create(model="m", input="x", background=True)
    wait_status(c, r.id, "completed")
    quiet.terminate()
    lines = log_lines(quiet)
    assert not [x for x in lines if x["logger"] == "bgmode.access"]
    assert [x["status"] for x in lines if x.get("response_id") == r.id] == ["queued", "in_progress", "completed"]
    quiet.kill()

    text = make_server(args=["--log-format", "text", "--log-level", "info"]).start()
    c = OpenAI(base_url=text.base_url, api_key="k", max_retries=0)
    c.responses.create(model="m", input="x", extra_headers={"X-Request-Id": "text-req"})
    text.terminate()
    log = text.log()
    assert "bgmode serving on" in log  # the banner, as text
    line = next(x for x in log.splitlines() if "request_id=text-req" in x)
    assert "bgmode.access: POST /v1/responses 200" in line and "tenant=default" in line
