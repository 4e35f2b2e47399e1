"""Regression tests for what fuzzing found (issue 9): every case gets OpenAI's error envelope
naming the parameter, never a 500, a cut body or a stream that never ends."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import orjson
import pytest

from tests.serving import BgmodeServer


def post(server: BgmodeServer, body: Any, **kw: Any) -> httpx.Response:
    # the standard library encodes deeper documents than orjson (these tests send 300 levels)
    return httpx.post(f"{server.base_url}/responses", content=json.dumps(body), timeout=30, **kw)


def error(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return dict(err)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("where", ["extra", "text.format"])
def test_deep_json_is_refused_before_anything_is_stored(bgmode_server: BgmodeServer, stream: bool, where: str) -> None:
    body: dict[str, Any] = {"model": "m", "input": "x", "stream": stream}
    if where == "extra":
        body["x_extra"] = nested(300)
    else:
        body["text"] = {"format": {"type": "json_schema", "name": "n", "schema": nested(300)}}
    err = error(post(bgmode_server, body))
    assert err["code"] == "invalid_json"


def test_json_as_deep_as_allowed_is_stored_and_sent_back(bgmode_server: BgmodeServer) -> None:
    # a hosted-tool item is stored verbatim (unknown top-level keys are a 400 unknown_parameter)
    hosted = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": nested(60)}
    r = post(bgmode_server, {"model": "m", "input": [{"role": "user", "content": "x"}, hosted], "background": True})
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    with httpx.stream("GET", f"{bgmode_server.base_url}/responses/{rid}?stream=true", timeout=30) as s:
        assert b"response.completed" in b"".join(s.iter_bytes())


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("nan", "metadata.sim_token_delay_ms"),
        ("inf", "metadata.sim_token_delay_ms"),
        ("1e20", "metadata.sim_token_delay_ms"),
        ("-1", "metadata.sim_token_delay_ms"),
    ],
)
@pytest.mark.parametrize("background", [False, True])
def test_simulator_delay_knob_is_bounded(bgmode_server: BgmodeServer, value: str, param: str, background: bool) -> None:
    body = {"model": "m", "input": "x", "background": background, "metadata": {"sim_token_delay_ms": value}}
    assert error(post(bgmode_server, body))["param"] == param


@pytest.mark.parametrize("value", ["5000000", "12345678901234567890123", "-3", "1_0", " +5"])
def test_simulator_token_knobs_are_bounded(bgmode_server: BgmodeServer, value: str) -> None:
    for knob in ("sim_output_tokens", "sim_fail_after_tokens"):
        body = {"model": "m", "input": "x", "metadata": {knob: value}}
        assert error(post(bgmode_server, body))["param"] == f"metadata.{knob}"
    # the server still serves: nothing was started
    assert httpx.get(f"{bgmode_server.url}/healthz").status_code == 200


def finished(server: BgmodeServer) -> tuple[str, int]:
    r = post(server, {"model": "m", "input": "x", "background": True})
    rid = r.json()["id"]
    with httpx.stream("GET", f"{server.base_url}/responses/{rid}?stream=true", timeout=30) as s:
        frames = b"".join(s.iter_bytes()).decode()
    last = max(
        int(line.split('"sequence_number":')[1].split("}")[0].split(",")[0])
        for line in frames.splitlines()
        if line.startswith("data:")
    )
    return rid, last


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("99999999999999999999999", "invalid_type"),
        ("9007199254740993", "invalid_value"),
        ("-2", "invalid_value"),
        ("1_0", "invalid_type"),
        (" 3", "invalid_type"),
        ("+5", "invalid_type"),
        ("\u0663", "invalid_type"),
    ],
)
@pytest.mark.parametrize("stream", ["true", "false"])
def test_starting_after_is_an_exact_bounded_integer(
    bgmode_server: BgmodeServer, raw: str, code: str, stream: str
) -> None:
    rid, _ = finished(bgmode_server)
    r = httpx.get(f"{bgmode_server.base_url}/responses/{rid}", params={"stream": stream, "starting_after": raw})
    err = error(r)
    assert err["param"] == "starting_after" and err["code"] == code


def test_starting_after_without_stream_and_past_the_end(bgmode_server: BgmodeServer) -> None:
    rid, last = finished(bgmode_server)
    err = error(httpx.get(f"{bgmode_server.base_url}/responses/{rid}", params={"starting_after": "1"}))
    assert err["param"] == "starting_after"
    err = error(
        httpx.get(
            f"{bgmode_server.base_url}/responses/{rid}", params={"stream": "true", "starting_after": str(last + 1)}
        )
    )
    assert err["param"] == "starting_after"


def test_finished_stream_resumed_at_its_end_closes_at_once(make_server: type[BgmodeServer]) -> None:
    # keep-alives an hour apart: a stream that waited for one would hit the client's timeout
    server = make_server(args=["--keepalive-seconds", "3600"]).start()
    rid, last = finished(server)
    r = httpx.get(
        f"{server.base_url}/responses/{rid}", params={"stream": "true", "starting_after": str(last)}, timeout=20
    )
    assert r.status_code == 200 and r.content == b""


@pytest.mark.parametrize("param", ["limit"])
@pytest.mark.parametrize("raw", ["1_0", " 3", "+5", "0", "101", "\u0663"])
def test_input_items_limit_is_exact(bgmode_server: BgmodeServer, param: str, raw: str) -> None:
    rid, _ = finished(bgmode_server)
    r = httpx.get(f"{bgmode_server.base_url}/responses/{rid}/input_items", params={param: raw})
    assert error(r)["param"] == param


def test_wrong_method_on_a_known_path_is_405_with_allow(bgmode_server: BgmodeServer) -> None:
    rid, _ = finished(bgmode_server)
    r = httpx.put(f"{bgmode_server.base_url}/responses/{rid}")
    assert error(r, 405)["code"] == "method_not_allowed"
    assert {"GET", "DELETE"} <= {m.strip() for m in r.headers["allow"].split(",")}
    r = httpx.put(f"{bgmode_server.base_url}/responses")
    error(r, 405)
    assert "POST" in r.headers["allow"]
    assert error(httpx.get(f"{bgmode_server.base_url}/nothing-here"), 404)["code"] == "not_found"


def test_malformed_http_gets_the_json_envelope(bgmode_server: BgmodeServer) -> None:
    with socket.create_connection(("127.0.0.1", bgmode_server.port), timeout=10) as s:
        s.sendall(b"GARBAGE /\x00 HTTP/9\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in head.lower()
    assert orjson.loads(body)["error"]["type"] == "invalid_request_error"


def test_a_large_input_is_polled_without_reading_it(bgmode_server: BgmodeServer) -> None:
    items = [{"role": "user", "content": f"m{i}"} for i in range(50_000)]
    r = post(bgmode_server, {"model": "m", "input": items, "background": True, "metadata": {"sim_output_tokens": "3"}})
    assert r.status_code == 200
    rid = r.json()["id"]
    with httpx.stream("GET", f"{bgmode_server.base_url}/responses/{rid}?stream=true", timeout=60) as s:
        b"".join(s.iter_bytes())
    polled = httpx.get(f"{bgmode_server.base_url}/responses/{rid}", timeout=30).json()
    assert polled["status"] == "completed" and polled["id"] == rid
    page = httpx.get(
        f"{bgmode_server.base_url}/responses/{rid}/input_items", params={"limit": 2, "order": "asc"}
    ).json()
    assert [p["content"][0]["text"] for p in page["data"]] == ["m0", "m1"] and page["has_more"] is True
