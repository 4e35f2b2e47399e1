"""HTTP/1.1 on the wire, read byte for byte from a raw socket: bgmode sends each JSON answer's
header block together with its body (`server._OneSend`), and these are the cases where a held
header block must still go out, whole and in order: pipelined requests, HEAD (no body at
all), `Connection: close`, `Expect: 100-continue`, and a stream whose events come later."""

from __future__ import annotations

import socket

import orjson

from tests.serving import BgmodeServer

CREATE = orjson.dumps({"model": "sim", "input": "wire", "background": True})


def request(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Authorization: Bearer k", *headers]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed with {self.buf!r} unread"
        self.buf += chunk

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *fields = raw.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1.1 "), status_line
        headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        return int(status_line.split()[1]), headers

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        body = b"" if head_request else self.exactly(int(headers["content-length"]))
        return status, headers, body

    def closed(self) -> bool:
        return not self.buf and self.sock.recv(1) == b""


def test_pipelined_requests_are_answered_whole_and_in_order(bgmode_server: BgmodeServer) -> None:
    with socket.create_connection(("127.0.0.1", bgmode_server.port), timeout=30) as s:
        s.sendall(
            request("POST", "/v1/responses", CREATE)
            + request("HEAD", "/readyz")
            + request("GET", "/v1/responses/resp_nope")
            + request("POST", "/v1/responses", CREATE, "Connection: close")
        )
        r = Reader(s)
        status, _, body = r.response()
        assert status == 200 and orjson.loads(body)["status"] == "queued"
        first = orjson.loads(body)["id"]
        status, headers, _ = r.response(head_request=True)
        assert status == 200 and int(headers["content-length"]) > 0
        status, _, body = r.response()
        assert status == 404 and "resp_nope" in orjson.loads(body)["error"]["message"]
        status, headers, body = r.response()
        assert status == 200 and headers["connection"] == "close"
        assert orjson.loads(body)["id"] != first
        assert r.closed()


def test_a_head_request_gets_its_header_block_before_the_connection_closes(bgmode_server: BgmodeServer) -> None:
    with socket.create_connection(("127.0.0.1", bgmode_server.port), timeout=30) as s:
        s.sendall(request("HEAD", "/readyz", b"", "Connection: close"))
        r = Reader(s)
        status, headers, _ = r.response(head_request=True)
        assert r.closed()
    assert status == 200 and headers["content-type"].startswith("application/json")


def test_expect_100_continue_then_the_answer(bgmode_server: BgmodeServer) -> None:
    with socket.create_connection(("127.0.0.1", bgmode_server.port), timeout=30) as s:
        head = request("POST", "/v1/responses", CREATE, "Expect: 100-continue")
        s.sendall(head[: -len(CREATE)])  # the header block only: the body waits for 100
        r = Reader(s)
        status, _ = r.head()
        assert status == 100
        s.sendall(CREATE)
        status, _, body = r.response()
    assert status == 200 and orjson.loads(body)["object"] == "response"


def test_a_stream_starts_before_its_later_events(bgmode_server: BgmodeServer) -> None:
    body = orjson.dumps({"model": "sim", "input": "wire", "stream": True, "metadata": {"sim_output_tokens": "3"}})
    with socket.create_connection(("127.0.0.1", bgmode_server.port), timeout=30) as s:
        s.sendall(request("POST", "/v1/responses", body))
        r = Reader(s)
        status, headers = r.head()
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        while b"0\r\n\r\n" not in r.buf:  # chunked: the last chunk ends the stream
            r.fill()
    assert b"event: response.completed" in r.buf
