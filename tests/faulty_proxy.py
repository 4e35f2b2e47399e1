"""A fault-injecting HTTP proxy for client tests (a test double).

`FaultyProxy` is a tiny real HTTP server on 127.0.0.1 that forwards every request to a real
`bgmode serve` and, on demand, misbehaves the way networks and load balancers do:

- `fail(n, status=503, ...)`: answer the next `n` matching requests with an error
  (optionally after forwarding them, so the server acted but the client never hears of it);
- `cut_streams(n, after_events=K)`: cut the next `n` event streams after `K` SSE events
  (`K=0`: before the first byte of the body), either by aborting the connection mid-body
  (`mode="abort"`, the client sees a protocol error) or by ending the body cleanly before the
  terminal event (`mode="close"`);
- `ignore_starting_after = True`: drop `starting_after` from stream requests before
  forwarding them, as a server that does not know the parameter would (every resume replays
  the log from the start).

Every request is recorded (`requests`) so tests can check what the client sent.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "accept-encoding", "te", "upgrade"}
)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    #: what the proxy did: "forwarded", "failed", "forwarded+failed", "cut"
    outcome: str = "forwarded"
    #: the upstream status and body (non-streaming answers only)
    upstream_status: int | None = None
    upstream_body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class _FailRule:
    remaining: int
    status: int
    method: str | None
    path_contains: str | None
    retry_after: str | None
    forward: bool

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.method is not None and method != self.method:
            return False
        return self.path_contains is None or self.path_contains in path


@dataclass
class _CutRule:
    remaining: int
    after_events: int
    mode: str


@dataclass
class FaultyProxy:
    upstream: str  # e.g. "http://127.0.0.1:8000" (no /v1)
    requests: list[Recorded] = field(default_factory=list)
    _fail_rules: list[_FailRule] = field(default_factory=list)
    _cut_rules: list[_CutRule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    #: forward stream resumes without `starting_after` (the server replays from 0)
    ignore_starting_after: bool = False

    # ------------------------------------------------------------------ control

    def fail(
        self,
        n: int,
        status: int = 503,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        retry_after: str | None = None,
        forward: bool = False,
    ) -> None:
        with self._lock:
            self._fail_rules.append(_FailRule(n, status, method, path_contains, retry_after, forward))

    def cut_streams(self, n: int, *, after_events: int, mode: str = "abort") -> None:
        assert mode in ("abort", "close")
        with self._lock:
            self._cut_rules.append(_CutRule(n, after_events, mode))

    def matching(self, method: str, path_contains: str = "") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and path_contains in r.path]

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultyProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ used by the handler

    def _take_fail(self, method: str, path: str) -> _FailRule | None:
        with self._lock:
            for rule in self._fail_rules:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    return rule
        return None

    def _take_cut(self) -> _CutRule | None:
        with self._lock:
            for rule in self._cut_rules:
                if rule.remaining > 0:
                    rule.remaining -= 1
                    return rule
        return None


class _Handler(BaseHTTPRequestHandler):
    owner: FaultyProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        self.close_connection = True
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        rec = Recorded(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        with self.owner._lock:
            self.owner.requests.append(rec)
        rule = self.owner._take_fail(self.command, split.path)
        if rule is not None and not rule.forward:
            rec.outcome = "failed"
            self._send_error(rule)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        target = self.path
        if self.owner.ignore_starting_after and "starting_after" in rec.query:
            kept = [(k, v) for k, vs in rec.query.items() if k != "starting_after" for v in vs]
            target = split.path + ("?" + urlencode(kept) if kept else "")
        with httpx.Client(timeout=httpx.Timeout(120.0)) as client:
            try:
                with client.stream(
                    self.command, self.owner.upstream + target, headers=headers, content=body
                ) as upstream:
                    if rule is not None:  # the server acted; the client never hears of it
                        upstream.read()
                        rec.outcome = "forwarded+failed"
                        rec.upstream_status = upstream.status_code
                        rec.upstream_body = upstream.content
                        self._send_error(rule)
                        return
                    if upstream.headers.get("content-type", "").startswith("text/event-stream"):
                        self._relay_stream(upstream, rec)
                    else:
                        upstream.read()
                        rec.upstream_status = upstream.status_code
                        rec.upstream_body = upstream.content
                        self._send_plain(upstream)
            except httpx.HTTPError:
                self._abort()

    def _send_error(self, rule: _FailRule) -> None:
        payload = json.dumps(
            {"error": {"message": "injected fault", "type": "server_error", "param": None, "code": None}}
        ).encode()
        self.send_response(rule.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        if rule.retry_after is not None:
            self.send_header("retry-after", rule.retry_after)
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _send_plain(self, upstream: httpx.Response) -> None:
        self.send_response(upstream.status_code)
        for k, v in upstream.headers.items():
            if k.lower() not in _HOP_HEADERS and k.lower() != "content-encoding":
                self.send_header(k, v)
        self.send_header("content-length", str(len(upstream.content)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(upstream.content)
        self.wfile.flush()

    def _relay_stream(self, upstream: httpx.Response, rec: Recorded) -> None:
        cut = self.owner._take_cut()
        self.send_response(upstream.status_code)
        for k, v in upstream.headers.items():
            if k.lower() not in _HOP_HEADERS and k.lower() != "content-encoding":
                self.send_header(k, v)
        self.send_header("transfer-encoding", "chunked")
        self.send_header("connection", "close")
        self.end_headers()
        events = 0
        if cut is not None and cut.after_events == 0:
            rec.outcome = "cut"
            if cut.mode == "abort":
                self._abort()
            else:
                self._chunk(b"")
            return
        for frame in _frames(upstream.iter_raw()):
            self._chunk(frame)
            if b"data:" in frame:
                events += 1
            if cut is not None and events >= cut.after_events:
                rec.outcome = "cut"
                if cut.mode == "abort":
                    self._abort()
                else:
                    self._chunk(b"")
                return
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _abort(self) -> None:
        """Drop the connection mid-body (no terminating chunk)."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _frames(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Whole SSE frames (each ending with a blank line) from a byte stream."""
    buf = b""
    for chunk in chunks:
        buf += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buf:
            frame, buf = buf.split(b"\n\n", 1)
            yield frame + b"\n\n"
    if buf:
        yield buf
